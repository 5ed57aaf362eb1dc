"""clustering"""
