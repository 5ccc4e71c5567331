"""`auditshipd init`: the unit it writes, the starter config, and what the wheel ships."""

from __future__ import annotations

import argparse
import re
import stat
from pathlib import Path

import pytest

from auditshipd.cli import build_parser
from auditshipd.config import load_config
from auditshipd.service import scaffold
from auditshipd.service.loading import load_runtime
from auditshipd.service.scaffold import InitSettings, render_unit, write_files

REPO = Path(__file__).resolve().parents[2]
UNIT = (REPO / "systemd" / "auditshipd.service").read_text()


def test_default_settings_render_the_shipped_unit_byte_for_byte():
    """The unit in systemd/ and the one init writes are the same file for the defaults:
    every sandboxing line is shared, only install-specific lines may differ."""
    assert render_unit(UNIT, InitSettings()) == UNIT


def test_rendered_unit_changes_only_the_install_specific_lines(tmp_path):
    """Custom dirs, user and executable change ExecStart, User, Group and ReadWritePaths
    (prefixed '-': they may not exist yet), nothing else."""
    s = InitSettings(config_dir=tmp_path / "etc", journal_dir=tmp_path / "j",
                     state_dir=tmp_path / "st", logs_dir=tmp_path / "lg", user="ship",
                     group="ship", executable="/opt/x/bin/auditshipd")
    out = render_unit(UNIT, s)
    changed = set(out.splitlines()) - set(UNIT.splitlines())
    assert changed == {
        f"ExecStart=/opt/x/bin/auditshipd run -c {tmp_path}/etc/auditshipd.toml",
        "User=ship", "Group=ship",
        f"ReadWritePaths=-{tmp_path}/j", f"ReadWritePaths=-{tmp_path}/st",
        f"ReadWritePaths=-{tmp_path}/lg",
    }
    assert all(line.startswith("ReadWritePaths=-") for line in out.splitlines()
               if line.startswith("ReadWritePaths="))


def test_install_under_a_home_directory_gets_protecthome_read_only_and_a_warning():
    """pipx without --global installs under ~: ProtectHome=yes would hide the program."""
    s = InitSettings(executable="/root/.local/share/pipx/venvs/auditshipd/bin/auditshipd")
    out = render_unit(UNIT, s)
    assert "ProtectHome=read-only\n" in out and "ProtectHome=yes" not in out
    assert s.warnings and "pipx install --global" in s.warnings[0]


def test_journal_path_agrees_in_starter_config_unit_and_readme(tmp_path):
    """The production journal path is one path: the config init writes, the unit's
    ReadWritePaths and the README's AuditJournal example."""
    s = InitSettings(config_dir=tmp_path)
    write_files(s)
    config = load_config(tmp_path / "auditshipd.toml")
    assert config.journal.path == "/var/log/audit-journal/audit.jsonl"
    assert config.journal.paths == ["/var/log/audit-journal/audit.jsonl*"]
    assert config.journal.state_dir == "/var/lib/auditshipd"
    assert "ReadWritePaths=-/var/log/audit-journal\n" in UNIT
    readme = (REPO / "README.md").read_text()
    assert 'AuditJournal("/var/log/audit-journal/audit.jsonl"' in readme
    assert "install -d -o APP_USER -g auditshipd -m 2770 /var/log/audit-journal" in readme


def test_written_files_validate_and_are_not_overwritten(tmp_path):
    """The starter config passes the full validation (sinks, portal, redaction); a second
    init refuses to overwrite and names the files; --force overwrites."""
    s = InitSettings(config_dir=tmp_path / "etc", state_dir=tmp_path / "state")
    written = write_files(s)
    assert [p.name for p, _ in written] == ["auditshipd.toml", "redaction-default.toml",
                                            "auditshipd.service"]
    config, _pm, _types = load_runtime(s.config_path)
    assert [(x.name, x.type) for x in config.sinks] == [("local-file", "file"), ("portal", "portal")]
    assert stat.S_IMODE(s.config_path.stat().st_mode) == 0o640
    assert "@" not in re.sub(r"[\w.+-]+@[\w.-]+", "", s.config_path.read_text())  # no placeholder left
    with pytest.raises(FileExistsError, match="auditshipd.toml.*--force"):
        write_files(s)
    write_files(s, force=True)


def test_every_command_and_option_has_help_text():
    """`auditshipd COMMAND --help` explains every option and positional argument."""
    missing = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                for name, sub in action.choices.items():
                    if not helps.get(name):
                        missing.append(" ".join([*path, name]))
                    walk(sub, [*path, name])
            elif not action.help and action.dest != "help":
                missing.append(" ".join([*path, *(action.option_strings or [action.dest])]))

    walk(build_parser(), ["auditshipd"])
    assert missing == []
    log_level = next(a for a in build_parser()._actions if a.dest == "log_level")
    assert "debug" in log_level.choices and "info" in log_level.choices


def test_installed_executable_is_next_to_the_running_python():
    """ExecStart names the auditshipd script of the environment init runs from."""
    exe = Path(scaffold.installed_executable())
    assert exe.name == "auditshipd" and exe.is_file()


@pytest.mark.parametrize(("option", "value"), [
    ("--metrics-listen", "9750"), ("--metrics-listen", "127.0.0.1:99999"),
    ("--portal-listen", "localhost"), ("--portal-listen", "[::zz]:8750"),
])
def test_init_refuses_a_listen_address_check_config_would_refuse(tmp_path, capsys, option, value):
    """--metrics-listen and --portal-listen are checked by the parsers of [metrics] and
    [portal] listen before anything is written."""
    from auditshipd.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["init", "--dir", str(tmp_path / "etc"), option, value])
    assert exited.value.code == 2
    assert f"argument {option}: {value!r}" in capsys.readouterr().err
    assert not (tmp_path / "etc").exists()


def test_init_with_listen_addresses_writes_a_valid_config(tmp_path):
    from auditshipd.cli import main

    assert main(["init", "--dir", str(tmp_path / "etc"), "--state-dir", str(tmp_path / "st"),
                 "--journal-dir", str(tmp_path / "j"), "--logs-dir", str(tmp_path / "l"),
                 "--metrics-listen", "[::1]:9751", "--portal-listen", "0.0.0.0:8751"]) == 0
    config, _pm, _types = load_runtime(tmp_path / "etc" / "auditshipd.toml")
    assert (config.metrics.listen, config.portal.listen) == ("[::1]:9751", "0.0.0.0:8751")
