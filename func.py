"""Knative Functions entry point (parliament): one image, the role comes from MODELMONITOR_ROLE."""
from modelmonitor.functions.app import main  # noqa: F401  (parliament looks up func.main)
