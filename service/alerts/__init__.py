"""Alerts: records, drift incidents and the webhook sink."""
