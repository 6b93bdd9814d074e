"""The operator guide's companion files agree with the code (issue 15 item 6): the JEA role capability
exposes exactly the cmdlets the controller sends, with every parameter it sends; the systemd unit and the
Containerfile are well formed and run `stagectl run`; every `stagectl ...` line of the guide parses."""

from __future__ import annotations

import ast
import configparser
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from controller.commands import cli
from controller.exchange import client as exchange_client
from controller.exchange.runner import CmdletOutput

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "operator-guide.md"
GATEWAY = ROOT / "docs" / "gateway"
UNIT = ROOT / "docs" / "deploy" / "stagectl.service"
CONTAINERFILE = ROOT / "Containerfile"
CMDLET = re.compile(r"^[A-Z][a-z]+-[A-Z][A-Za-z]+$")


# --- a reader for PowerShell data files (.psrc, .pssc): the subset they are written in -------------------


class _Psd1:
    """Hashtables `@{ k = v; ... }`, arrays `@( ... )` and comma lists, 'single' and "double" quoted
    strings, $true/$false/$null, numbers, `#` and `<# #>` comments. Enough to read what JEA reads."""

    TOKEN = re.compile(
        r"""(?P<ws>[ \t\r]+)|(?P<nl>\n)|(?P<comment>\#[^\n]*)|(?P<block><\#.*?\#>)
        |(?P<open>@\{|@\()|(?P<punct>[{}()=;,])
        |(?P<single>'(?:[^']|'')*')|(?P<double>"(?:[^"`]|`.)*")
        |(?P<var>\$(?:true|false|null))|(?P<number>-?\d+(?:\.\d+)?)|(?P<bare>[A-Za-z_][\w.-]*)""",
        re.X | re.S | re.I,
    )

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        position = 0
        while position < len(text):
            match = self.TOKEN.match(text, position)
            if match is None:
                raise ValueError(f"cannot read at {text[position : position + 40]!r}")
            kind = match.lastgroup or ""
            if kind not in ("ws", "comment", "block"):
                self.tokens.append((kind, match.group()))
            position = match.end()
        self.index = 0

    def parse(self) -> Any:
        self._skip_newlines()
        value = self._value()
        self._skip_newlines()
        if self.index != len(self.tokens):
            raise ValueError(f"unexpected {self.tokens[self.index]!r} after the document")
        return value

    def _peek(self) -> tuple[str, str]:
        return self.tokens[self.index] if self.index < len(self.tokens) else ("end", "")

    def _take(self, text: str | None = None) -> tuple[str, str]:
        token = self._peek()
        if text is not None and token[1] != text:
            raise ValueError(f"expected {text!r}, found {token[1]!r}")
        self.index += 1
        return token

    def _skip_newlines(self) -> None:
        while self._peek()[0] == "nl" or self._peek()[1] == ";":
            self.index += 1

    def _value(self) -> Any:
        """One value, or a comma list of values (PowerShell's array operator)."""
        first = self._single()
        if self._peek()[1] != ",":
            return first
        items = [first]
        while self._peek()[1] == ",":
            self._take(",")
            while self._peek()[0] == "nl":
                self.index += 1
            items.append(self._single())
        return items

    def _single(self) -> Any:
        kind, text = self._take()
        if text == "@{":
            table: dict[str, Any] = {}
            self._skip_newlines()
            while self._peek()[1] != "}":
                key_kind, key = self._take()
                key = self._string(key_kind, key) if key_kind in ("single", "double") else key
                self._take("=")
                self._skip_newlines_in_value()
                table[key] = self._value()
                self._skip_newlines()
            self._take("}")
            return table
        if text == "@(":
            items: list[Any] = []
            self._skip_newlines()
            while self._peek()[1] != ")":
                value = self._value()
                items.extend(value if isinstance(value, list) else [value])
                self._skip_newlines()
            self._take(")")
            return items
        if kind in ("single", "double"):
            return self._string(kind, text)
        if kind == "var":
            return {"$true": True, "$false": False, "$null": None}[text.lower()]
        if kind == "number":
            return float(text) if "." in text else int(text)
        raise ValueError(f"unexpected {text!r}")

    def _skip_newlines_in_value(self) -> None:
        while self._peek()[0] == "nl":
            self.index += 1

    @staticmethod
    def _string(kind: str, text: str) -> str:
        if kind == "single":
            return text[1:-1].replace("''", "'")
        assert "$" not in text, f"a double-quoted string expands variables: {text}"
        return re.sub(r"`(.)", r"\1", text[1:-1])


def read_psd1(path: Path) -> dict[str, Any]:
    data = _Psd1(path.read_text(encoding="utf-8")).parse()
    assert isinstance(data, dict), f"{path.name} is not one hashtable"
    return data


def _as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else [value]


def visible_commands() -> dict[str, dict[str, dict[str, Any]]]:
    """Command name -> parameter name -> its constraints ({} when the command takes any parameter)."""
    capability = read_psd1(GATEWAY / "StagectlMigration.psrc")
    commands: dict[str, dict[str, dict[str, Any]]] = {}
    for field in ("VisibleCmdlets", "VisibleFunctions"):
        for entry in _as_list(capability.get(field, [])):
            entry = {"Name": entry} if isinstance(entry, str) else entry
            assert entry["Name"] not in commands, f"{entry['Name']} is listed twice"
            commands[entry["Name"]] = {p["Name"]: p for p in _as_list(entry.get("Parameters", []))}
    return commands


# --- what the code sends --------------------------------------------------------------------------------


def _python_files() -> Iterator[Path]:
    for package in ("exchange", "planner"):
        yield from sorted((ROOT / "controller" / package).rglob("*.py"))


def sent_cmdlets() -> set[str]:
    """Every cmdlet name the code hands to the runner: read from the calls that send one (an action's
    cmdlet, a settings correction, a read, the pool's sign-in, the pipeline's Select-Object), not from
    every string that looks like a cmdlet (the settlement code compares names it never sends)."""
    senders = {
        "ExchangeAction": 0,
        "correct_settings": 0,
        "_read": 1,
        "call": 0,
        "_invoke": 0,
        "add_cmdlet": 0,
    }
    found: set[str] = set()
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            position = senders.get(name)
            if position is None or len(node.args) <= position:
                continue
            argument = node.args[position]
            if (
                isinstance(argument, ast.Constant)
                and isinstance(argument.value, str)
                and CMDLET.match(argument.value)
            ):
                found.add(argument.value)
    return found


class _Recorder:
    """A CmdletRunner that records each call and answers with one row per batch it was told about."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, object], tuple[str, ...]]] = []

    def run(self, cmdlet: str, parameters: Mapping[str, object], select: Sequence[str] = ()) -> CmdletOutput:
        self.calls.append((cmdlet, dict(parameters), tuple(select)))
        return CmdletOutput([])

    def close(self) -> None:
        pass


def read_calls() -> list[tuple[str, dict[str, object], tuple[str, ...]]]:
    """Every read a pass can make, as the Exchange client makes it."""
    from controller.model.snapshot import ObservedBatch

    recorder = _Recorder()
    reader = exchange_client.ExchangeClient(recorder, sleep=lambda _: None)
    reader.read_endpoints()
    batches = reader.read_batches() or []
    batch = ObservedBatch(Identity="Batch0-IT", Status="Syncing", TotalCount=0)
    reader.read_users([batch])
    reader.read_users([batch], whole=True)
    reader.read_recipients(["o'brien@contoso.com", "ann@contoso.com"])
    reader.read_recipients([f"user{n}@contoso.com" for n in range(exchange_client.FILTERED_MAX + 1)])
    assert batches == []
    return recorder.calls


def planned_parameters() -> dict[str, set[str]]:
    """The parameters of every action in the planner's table tests (tests/cases/*/expected.json)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "tests" / "cases").glob("*/expected.json")):
        for action in json.loads(path.read_text(encoding="utf-8")).get("actions", []):
            if action.get("system") == "exchange":
                found.setdefault(action["cmdlet"], set()).update(action.get("parameters", {}))
    return found


def bootstrap_parameters() -> set[str]:
    """The keys of the Connect-ExchangeOnline call in controller/exchange/psrp.py."""
    tree = ast.parse((ROOT / "controller" / "exchange" / "psrp.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == "Connect-ExchangeOnline"
            and isinstance(node.args[1], ast.Dict)
        ):
            return {key.value for key in node.args[1].keys if isinstance(key, ast.Constant)}
    raise AssertionError("psrp.py sends no Connect-ExchangeOnline")


# --- the JEA endpoint ---------------------------------------------------------------------------------


def test_the_role_capability_exposes_exactly_the_cmdlets_the_code_sends() -> None:
    sent = sent_cmdlets()
    assert {"Connect-ExchangeOnline", "Select-Object", "Get-MigrationBatch", "New-MigrationBatch"} <= sent
    visible = set(visible_commands())
    assert visible - sent == set(), f"visible in the endpoint but never sent: {sorted(visible - sent)}"
    assert sent - visible == set(), f"sent but not visible in the endpoint: {sorted(sent - visible)}"


def test_the_guide_lists_the_same_cmdlets() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    table = text.split("<!-- cmdlets -->")[1].split("<!-- /cmdlets -->")[0]
    listed = set(re.findall(r"^\| `([A-Z][a-z]+-[A-Z][A-Za-z]+)` \|", table, re.M))
    assert listed == sent_cmdlets()


def _allowed(commands: Mapping[str, Mapping[str, Mapping[str, Any]]], cmdlet: str, parameter: str) -> bool:
    constraints = commands[cmdlet]
    return not constraints or parameter in constraints


def _accepts(constraint: Mapping[str, Any], value: object) -> bool:
    """JEA's check of one value: a ValidateSet (case-insensitive) or a ValidatePattern (.NET, IgnoreCase)."""
    values = [str(v) for v in _as_list(value)]
    if "ValidateSet" in constraint:
        allowed = {str(v).lower() for v in _as_list(constraint["ValidateSet"])}
        return all(v.lower() in allowed for v in values)
    if "ValidatePattern" in constraint:
        return all(re.search(constraint["ValidatePattern"], v, re.I) for v in values)
    return True


def test_every_read_passes_the_endpoints_parameter_constraints() -> None:
    commands = visible_commands()
    calls = read_calls()
    assert {cmdlet for cmdlet, _, _ in calls} == {
        "Get-MigrationEndpoint",
        "Get-MigrationBatch",
        "Get-MigrationUser",
        "Get-Recipient",
    }
    for cmdlet, parameters, select in calls:
        for name, value in parameters.items():
            assert _allowed(commands, cmdlet, name), f"{cmdlet} -{name} is not allowed by the endpoint"
            constraint = commands[cmdlet].get(name, {})
            assert _accepts(constraint, value), f"{cmdlet} -{name} {value!r} is refused by the endpoint"
        if select:
            assert _accepts(commands["Select-Object"]["Property"], list(select)), (
                f"Select-Object -Property {select} after {cmdlet} is refused by the endpoint"
            )
    assert "InputObject" in commands["Select-Object"], "Select-Object takes no pipeline input without it"


def test_the_select_object_properties_are_the_ones_the_client_reads() -> None:
    wanted = {
        *exchange_client.ENDPOINT_PROPERTIES,
        *exchange_client.BATCH_PROPERTIES,
        *exchange_client.USER_PROPERTIES,
        *exchange_client.RECIPIENT_PROPERTIES,
        *exchange_client.ENDPOINT_CHECK_PROPERTIES,
    }
    assert set(visible_commands()["Select-Object"]["Property"]["ValidateSet"]) == wanted


def test_every_planned_parameter_is_allowed_by_the_endpoint() -> None:
    commands = visible_commands()
    planned = planned_parameters()
    assert "New-MigrationBatch" in planned and "Remove-MigrationUser" in planned
    for cmdlet, names in planned.items():
        assert cmdlet in commands, f"the planner's {cmdlet} is not visible in the endpoint"
        for name in names:
            assert _allowed(commands, cmdlet, name), f"{cmdlet} -{name} is not allowed by the endpoint"


def test_the_sign_in_is_held_to_the_tenants_app() -> None:
    commands = visible_commands()
    assert bootstrap_parameters() == set(commands["Connect-ExchangeOnline"])
    for name, placeholder in (
        ("AppId", "__APP_ID__"),
        ("CertificateThumbprint", "__CERTIFICATE_THUMBPRINT__"),
        ("Organization", "__ORGANIZATION__"),
    ):
        assert commands["Connect-ExchangeOnline"][name]["ValidateSet"] == placeholder
    script = (GATEWAY / "Register-StagectlEndpoint.ps1").read_text(encoding="utf-8")
    for placeholder in (
        "__APP_ID__",
        "__CERTIFICATE_THUMBPRINT__",
        "__ORGANIZATION__",
        "__CONNECTING_GROUP__",
    ):
        assert f"Replace('{placeholder}'" in script


def test_the_recipient_filter_pattern_takes_what_the_client_writes() -> None:
    pattern = visible_commands()["Get-Recipient"]["Filter"]["ValidatePattern"]
    for addresses in (["ann@contoso.com"], ["o'brien@contoso.com", "bob@contoso.com", "x'y'z@contoso.com"]):
        assert re.search(pattern, exchange_client.address_filter(addresses), re.I)
    for hostile in ("(PrimarySmtpAddress -eq 'a@b') ; Remove-Mailbox x", "(Name -like '*')", "*"):
        assert not re.search(pattern, hostile, re.I)


def test_the_session_configuration_uses_the_role_capability() -> None:
    session = read_psd1(GATEWAY / "StagectlMigration.pssc")
    assert session["SessionType"] == "RestrictedRemoteServer"
    assert session["RunAsVirtualAccount"] is True
    roles = session["RoleDefinitions"]
    assert list(roles) == ["__CONNECTING_GROUP__"]
    assert roles["__CONNECTING_GROUP__"]["RoleCapabilities"] == "StagectlMigration"
    assert read_psd1(GATEWAY / "StagectlMigration.psrc")["ModulesToImport"] == "ExchangeOnlineManagement"


# --- the systemd unit ---------------------------------------------------------------------------------


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)  # systemd repeats some keys
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser


def test_the_systemd_unit_runs_the_controller_hardened() -> None:
    service = _unit()["Service"]
    command = shlex.split(service["ExecStart"])
    assert command[0] == "/opt/stagectl/bin/stagectl"
    args = cli.build_parser().parse_args(command[1:])
    assert args.command == "run" and str(args.config) == "/etc/stagectl/stagectl.yaml"
    expected = {
        "User": "stagectl",
        "StateDirectory": "stagectl",
        "EnvironmentFile": "/etc/stagectl/stagectl.env",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "KillSignal": "SIGTERM",
        "Restart": "on-failure",
    }
    assert {key: service.get(key) for key in expected} == expected


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """`make test` installs systemd (for systemd-analyze) like BIND: this test never skips."""
    # verify also wants the binary to exist: the stagectl of this environment stands in for /opt/stagectl.
    executable = Path(sys.executable).parent / "stagectl"
    assert executable.exists(), "no stagectl script beside this Python: install the project (make setup)"
    assert shutil.which("systemd-analyze"), (
        "systemd-analyze is missing: make test installs the systemd package"
    )
    unit = tmp_path / "stagectl.service"
    unit.write_text(UNIT.read_text(encoding="utf-8").replace("/opt/stagectl/bin/stagectl", str(executable)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "stagectl.service" not in result.stderr, result.stderr


# --- the Containerfile --------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = CONTAINERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_the_containerfile_builds_from_debian_and_runs_stagectl_as_a_user() -> None:
    instructions = _instructions()
    arguments = dict(value.split("=", 1) for op, value in instructions if op == "ARG" and "=" in value)
    base = next(value for op, value in instructions if op == "FROM")
    base = re.sub(r"\$\{(\w+)\}", lambda m: arguments[m.group(1)], base)
    # Debian 12's python3 is 3.11: what pyproject.toml asks for at least.
    assert re.fullmatch(r"(docker\.io/library/)?debian:bookworm(-slim)?", base), base
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["requires-python"] == ">=3.11"
    for op, value in instructions:
        if op == "COPY":
            *sources, _ = value.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
    user = next(value for op, value in instructions if op == "USER")
    assert user not in ("root", "0")
    assert any(op == "VOLUME" and "/var/lib/stagectl" in value for op, value in instructions)
    entrypoint = json.loads(next(value for op, value in instructions if op == "ENTRYPOINT"))
    assert entrypoint[0] == "stagectl"
    args = cli.build_parser().parse_args(entrypoint[1:])
    assert args.command == "run"
    installs = " ".join(value for op, value in instructions if op == "RUN")
    assert "pip install /src" in installs and " git " in installs


# --- the guide ----------------------------------------------------------------------------------------


def guide_commands() -> list[str]:
    """Every `stagectl ...` command line in the guide's code blocks (continuations joined, prompts and
    environment assignments dropped, comments, redirections and a trailing `&` cut)."""
    text = GUIDE.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```(?:sh|bash|console|shell)\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ").strip()
            words = shlex.split(line, comments=True) if line else []
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                words = words[1:]
            if words and words[0] == "stagectl":
                # the command ends where the shell takes over: a redirection, a pipe, a background `&`
                end = next((i for i, w in enumerate(words) if re.match(r"^(\d?>>?|\||&&?|;)", w)), len(words))
                commands.append(" ".join(shlex.quote(w) for w in words[:end]))
    return commands


def test_the_guide_shows_the_commands_it_promises() -> None:
    shown = {" ".join(shlex.split(c)[1:3]) for c in guide_commands()}
    for promised in ("sim init", "validate", "plan", "run --config", "sim advance", "sim fail", "status"):
        assert any(s.startswith(promised) for s in shown), f"the guide shows no `stagectl {promised}`"
    assert any(c.startswith("stagectl sim-gateway") and "--tls" in c for c in guide_commands())
    assert any(c.startswith("stagectl audit show") for c in guide_commands())
    assert any(c.startswith("stagectl audit verify") for c in guide_commands())


@pytest.mark.parametrize("command", guide_commands())
def test_every_command_in_the_guide_is_a_valid_command_line(command: str) -> None:
    words = shlex.split(command)[1:]
    try:
        cli.build_parser().parse_args(words)
    except SystemExit as error:  # argparse exits 2 on an unknown command or option
        pytest.fail(f"`{command}` is not a valid stagectl command line (exit {error.code})")


def test_the_readme_links_the_guide_and_the_guide_links_its_files() -> None:
    assert "(docs/operator-guide.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
    links = set(re.findall(r"\]\(([^)#\s]+)", GUIDE.read_text(encoding="utf-8")))
    for companion in (
        "gateway/StagectlMigration.psrc",
        "gateway/StagectlMigration.pssc",
        "gateway/Register-StagectlEndpoint.ps1",
        "deploy/stagectl.service",
        "../Containerfile",
    ):
        assert companion in links, f"the guide does not link {companion}"
        assert (GUIDE.parent / companion).exists()


def test_every_write_cmdlet_of_the_endpoint_takes_confirm() -> None:
    """The client sends -Confirm:$false with every write (a Remove-* would wait for an answer otherwise)."""
    writes = {name: parameters for name, parameters in visible_commands().items() if "-Migration" in name}
    # Get-* and Test-MigrationServerAvailability (a connection test, sent as a read) change nothing.
    writes = {n: parameters for n, parameters in writes.items() if not n.startswith(("Get-", "Test-"))}
    assert writes, "no write cmdlet found in the role capability"
    assert [name for name, parameters in writes.items() if "Confirm" not in parameters] == []
