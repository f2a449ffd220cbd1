"""The demo stream and the main job that plays it end to end."""
