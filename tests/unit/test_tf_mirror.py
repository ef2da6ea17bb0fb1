"""scripts/tf_mirror.py: where Terraform gets hashicorp/aws when make runs it."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import tf_mirror

TARGET = "linux_amd64"
ACCEPTS = tf_mirror.accepted_versions()  # the stack's own constraint: >= 5.100, < 7.0


def make_mirror(
    root: Path, version: str = "5.100.0", target: str = TARGET, packed: bool = False
) -> Path:
    """A filesystem mirror holding one provider build."""
    base = root / "registry.terraform.io" / "hashicorp" / "aws"
    base.mkdir(parents=True, exist_ok=True)
    if packed:
        (base / f"terraform-provider-aws_{version}_{target}.zip").write_bytes(b"zip")
    else:
        (base / version / target).mkdir(parents=True)
        (base / version / target / "terraform-provider-aws").write_bytes(b"binary")
    return root


def decide(
    environ: dict[str, str], places: tuple[str, ...], reachable: bool = False
) -> Path | None:
    return tf_mirror.decide(
        environ, reachable=lambda: reachable, places=places, accepts=ACCEPTS, target=TARGET
    )


def test_the_constraint_is_read_from_versions_tf() -> None:
    # GIVEN terraform/versions.tf WHEN its constraint is tested THEN it says >= 5.100, < 7.0
    assert ACCEPTS((5, 100, 0)) and ACCEPTS((6, 2, 1))
    assert not ACCEPTS((5, 99, 9)) and not ACCEPTS((7, 0, 0))


def test_a_named_mirror_is_used(tmp_path: Path) -> None:
    # GIVEN KV_SYNC_TF_PROVIDER_MIRROR names a mirror WHEN deciding THEN it is used, unprobed
    mirror = make_mirror(tmp_path / "m")
    assert decide({tf_mirror.MIRROR_ENV: str(mirror), "HOME": str(tmp_path)}, ()) == mirror


@pytest.mark.parametrize(
    ("version", "target"), [("5.99.0", TARGET), ("7.1.0", TARGET), ("5.100.0", "linux_arm64")]
)
def test_a_named_mirror_without_a_usable_provider_fails_in_one_line(
    tmp_path: Path, version: str, target: str
) -> None:
    # GIVEN a named mirror with the wrong version or platform only
    mirror = make_mirror(tmp_path / "m", version, target)
    # WHEN deciding THEN it fails, naming the variable, even with the registry up
    with pytest.raises(tf_mirror.MirrorError) as raised:
        decide({tf_mirror.MIRROR_ENV: str(mirror), "HOME": str(tmp_path)}, (), reachable=True)
    assert tf_mirror.MIRROR_ENV in str(raised.value) and "\n" not in str(raised.value)


def test_a_reachable_registry_means_no_mirror(tmp_path: Path) -> None:
    # GIVEN the registry answers and a mirror also exists WHEN deciding THEN Terraform downloads
    make_mirror(tmp_path / "opt" / "tf")
    assert decide({"HOME": str(tmp_path)}, (str(tmp_path / "opt"),), reachable=True) is None


def test_an_implied_mirror_directory_is_found(tmp_path: Path) -> None:
    # GIVEN no registry and a mirror in ~/.terraform.d/plugins WHEN deciding THEN it is used
    mirror = make_mirror(tmp_path / ".terraform.d" / "plugins")
    assert decide({"HOME": str(tmp_path)}, ()) == mirror


def test_xdg_data_dirs_are_implied_mirror_directories(tmp_path: Path) -> None:
    # GIVEN a mirror under $XDG_DATA_DIRS/terraform/plugins WHEN deciding THEN it is used
    mirror = make_mirror(tmp_path / "share" / "terraform" / "plugins")
    environ = {
        "HOME": str(tmp_path / "home"),
        "XDG_DATA_DIRS": f"/nonexistent:{tmp_path / 'share'}",
    }
    assert decide(environ, ()) == mirror


def test_a_mirror_a_few_levels_under_a_usual_place_is_found(tmp_path: Path) -> None:
    # GIVEN a packed mirror three levels under /opt-like place, and a too-deep one elsewhere
    mirror = make_mirror(tmp_path / "opt" / "a" / "b" / "c", packed=True)
    make_mirror(tmp_path / "srv" / "1" / "2" / "3" / "4")
    # WHEN deciding THEN the reachable one is found; the deeper one is not
    assert (
        decide({"HOME": str(tmp_path / "h")}, (str(tmp_path / "srv"), str(tmp_path / "opt")))
        == mirror
    )


def test_hidden_directories_and_unusable_mirrors_are_skipped(tmp_path: Path) -> None:
    # GIVEN a provider in a hidden directory and an old one WHEN deciding THEN neither is used
    make_mirror(tmp_path / "opt" / ".terraform" / "providers")
    make_mirror(tmp_path / "opt" / "old", version="4.67.0")
    with pytest.raises(tf_mirror.MirrorError) as raised:
        decide({"HOME": str(tmp_path / "h")}, (str(tmp_path / "opt"),))
    # THEN the one line says what to run and what to set
    message = str(raised.value)
    assert "\n" not in message
    assert "terraform -chdir=terraform providers mirror DIR" in message
    assert f"{tf_mirror.MIRROR_ENV}=DIR" in message


def test_the_cli_config_installs_aws_from_the_mirror_only(tmp_path: Path) -> None:
    # GIVEN a mirror path with a quote in it WHEN the CLI config is written THEN it is escaped
    text = tf_mirror.cli_config(tmp_path / 'a"b')
    assert 'path    = "' + str(tmp_path) + '/a\\"b"' in text
    assert 'include = ["hashicorp/aws"]' in text


def test_the_registry_probe_sees_a_listening_and_a_closed_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN no proxy, a listening socket and a host that does not resolve
    for name in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        # WHEN probed THEN the first answers and the other does not
        assert tf_mirror.registry_reachable("127.0.0.1", port, timeout=1)
    assert not tf_mirror.registry_reachable("host.invalid", timeout=1)


def test_the_script_prints_the_mirror_and_writes_the_config(tmp_path: Path) -> None:
    # GIVEN a named mirror WHEN the script runs THEN stdout is the mirror and the config exists
    mirror = make_mirror(tmp_path / "m", target=tf_mirror.machine_platform())
    config = tmp_path / "cli.tfrc"
    done = subprocess.run(
        [sys.executable, "scripts/tf_mirror.py", "--write-cli-config", str(config)],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), tf_mirror.MIRROR_ENV: str(mirror)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == str(mirror)
    assert str(mirror) in config.read_text()
