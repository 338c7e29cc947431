"""Reusable attention and region layers shared by the attention models."""
