"""Synthetic site coding profiles (YAML data)."""
