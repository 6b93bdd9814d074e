"""The controller configuration: every problem at once, each at its file:line:column, backends included."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller import errors
from controller.runtime.config import load_config

CONFIG = """\
apiVersion: stagectl/v1
kind: ControllerConfig
stateDir: state
exchange:
  backend: psrp
  psrp:
    host: gateway.contoso.com
    auth: magic
    bootstrap: none
    caBundle: ca.pem
dns:
  backend: rfc2136
  rfc2136:
    default:
      timeout: 2
"""


def test_backend_sections_are_checked_with_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "stagectl.yaml"
    path.write_text(CONFIG)
    with pytest.raises(errors.InvalidInput) as caught:
        load_config(path)
    problems = caught.value.problems
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"{path}:8:11: exchange.psrp.auth: Input should be 'basic'")
    assert problems[1].startswith(f"{path}:15:7: dns.rfc2136.default:")
    assert "servers" in problems[1] and "resolver" in problems[1]


def test_a_valid_configuration_resolves_paths_against_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "stagectl.yaml"
    path.write_text(
        CONFIG.replace("magic", "basic").replace("      timeout: 2", "      servers: ['127.0.0.1:53']")
    )
    config = load_config(path)
    assert config.path(config.state_dir) == tmp_path.resolve() / "state"
    assert config.exchange.psrp == {
        "host": "gateway.contoso.com",
        "auth": "basic",
        "bootstrap": "none",
        "caBundle": "ca.pem",
    }
