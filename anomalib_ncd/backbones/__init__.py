"""Backbones and their offline weights."""
