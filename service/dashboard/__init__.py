"""The operators' dashboard and report: data, figures, Grad-CAM and the views."""
