"""Card templates (installed as package data hf_mixture.hub_cards)."""
