"""ModelMonitor as a legacy parliament function (kn func before v1.18, or the deprecated pack/s2i
builders): parliament imports this file and calls ``main(context)``. One image for the four
roles; MODELMONITOR_ROLE says which one this process serves. The logic is
modelmonitor.runtime.legacy_parliament over the same role handlers as the func-python functions.
"""
import os
import sys

# `make functions` unpacks the modelmonitor wheel into vendor/ (the build context of a function
# is its own folder); its third-party dependencies are in requirements.txt.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor"))

from modelmonitor.runtime.legacy_parliament import LegacyFunction  # noqa: E402

main = LegacyFunction.from_environment().main
