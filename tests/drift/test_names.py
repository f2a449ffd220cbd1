import subprocess
import sys

from drift.concept import CONCEPT_DETECTORS as CONCEPT_NAMES_USED
from drift.names import CONCEPT_DETECTORS, FEATURE_SPACES, ONLINE_DETECTORS, unknown_message


def test_the_lists_the_settings_check() -> None:
    assert FEATURE_SPACES == ("penultimate", "encoder", "properties")
    assert ONLINE_DETECTORS == ("mmd", "lsdd")
    assert CONCEPT_NAMES_USED is CONCEPT_DETECTORS


def test_unknown_message_lists_every_name() -> None:
    template = unknown_message("online detector", ONLINE_DETECTORS)
    expected = "unknown online detector 'cvm'; known detectors: 'mmd', 'lsdd'"
    assert template.format(name="cvm") == expected


def test_settings_get_the_names_without_torch() -> None:
    code = (
        "import sys, service.config;"
        "assert 'torch' not in sys.modules and 'alibi_detect' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
