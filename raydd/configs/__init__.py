"""Presets shipped as package data (one YAML file per preset)."""
