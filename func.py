"""Knative Functions entry point (parliament): one image, the role comes from MODELMONITOR_ROLE."""
from modelmonitor.runtime.app import main  # noqa: F401  (parliament looks up func.main)
