"""mixture"""
