"""Where Terraform gets the ``hashicorp/aws`` provider, decided for ``make``.

1. ``KV_SYNC_TF_PROVIDER_MIRROR`` names a filesystem mirror: it is checked and used.
2. registry.terraform.io accepts a connection (2.5 s at most): nothing is printed,
   and Terraform downloads the provider as usual.
3. Otherwise a mirror is searched for in Terraform's implied local mirror
   directories, then up to three levels under the places where administrators
   install shared data (``/opt``, ``/usr/local/share``, ``/usr/share``,
   ``/usr/local/lib``, ``/srv``, ``~``).

A mirror (the directory holding ``registry.terraform.io/hashicorp/aws/<version>/
<os_arch>/``, unpacked or as the zip ``terraform providers mirror`` writes) must
hold a version ``terraform/versions.tf`` accepts for this machine's platform. Its
path goes to stdout, and ``--write-cli-config PATH`` writes a CLI configuration
that installs from it. When there is no provider to be had, one line on stderr
says what to install or set, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

MIRROR_ENV = "KV_SYNC_TF_PROVIDER_MIRROR"
REGISTRY = "registry.terraform.io"
PROVIDER_PATH = Path(REGISTRY) / "hashicorp" / "aws"
VERSIONS_TF = Path(__file__).resolve().parents[1] / "terraform" / "versions.tf"
USUAL_PLACES = ("/opt", "/usr/local/share", "/usr/share", "/usr/local/lib", "/srv", "~")
SEARCH_DEPTH = 3
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}

Version = tuple[int, ...]


class MirrorError(Exception):
    """No usable provider; the message is the one line to show."""


def accepted_versions(versions_tf: Path = VERSIONS_TF) -> Callable[[Version], bool]:
    """The stack's ``hashicorp/aws`` constraint (``>=`` and ``<`` clauses) as a test."""
    match = re.search(r'hashicorp/aws"\s*version\s*=\s*"([^"]*)"', versions_tf.read_text())
    clauses = re.findall(r"(>=|<)\s*([\d.]+)", match.group(1) if match else "")
    bounds = [(op, tuple(int(part) for part in text.split("."))) for op, text in clauses]
    return lambda version: all((version >= b) if op == ">=" else (version < b) for op, b in bounds)


def machine_platform() -> str:
    """Terraform's name of this machine's platform, such as ``linux_amd64``."""
    machine = platform.machine().lower()
    return f"{sys.platform.rstrip('0123456789')}_{_ARCH.get(machine, machine)}"


def holds_provider(root: Path, accepts: Callable[[Version], bool], target: str) -> bool:
    """Whether ``root`` is a mirror with an accepted version for ``target``."""
    base = root / PROVIDER_PATH
    for entry in base.iterdir() if base.is_dir() else ():
        unpacked = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", entry.name)
        packed = re.fullmatch(
            rf"terraform-provider-aws_(\d+)\.(\d+)\.(\d+)_{target}\.zip", entry.name
        )
        if unpacked and (entry / target).is_dir() and any((entry / target).iterdir()):
            version = tuple(int(part) for part in unpacked.groups())
        elif packed:
            version = tuple(int(part) for part in packed.groups())
        else:
            continue
        if accepts(version):
            return True
    return False


def implied_dirs(environ: Mapping[str, str], home: Path) -> list[Path]:
    """Terraform's implied local mirror directories on Linux and other Unix-like systems.

    https://developer.hashicorp.com/terraform/cli/config/config-file#implied-local-mirror-directories
    """
    data_home = environ.get("XDG_DATA_HOME") or str(home / ".local" / "share")
    data_dirs = (environ.get("XDG_DATA_DIRS") or "/usr/local/share:/usr/share").split(":")
    bases = [Path(d) for d in (data_home, *data_dirs) if d.startswith("/")]
    return [home / ".terraform.d" / "plugins", *(b / "terraform" / "plugins" for b in bases)]


def roots_under(place: Path, depth: int = SEARCH_DEPTH) -> Iterator[Path]:
    """Directories at most ``depth`` below ``place`` holding ``registry.terraform.io``
    (hidden and symlinked directories are not entered)."""
    try:
        entries = sorted(os.scandir(place), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        if entry.name == REGISTRY and entry.is_dir():
            yield place
        elif depth > 0 and not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
            yield from roots_under(Path(entry.path), depth - 1)


def registry_reachable(host: str = REGISTRY, port: int = 443, timeout: float = 2.5) -> bool:
    """Whether the registry (or the HTTPS proxy, when one is set) accepts a connection."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if proxy:
        host, _, text = re.sub(r"^\w+://|/.*$", "", proxy).partition(":")
        port = int(text or 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except (OSError, ValueError):
        return False
    return True


def decide(
    environ: Mapping[str, str],
    *,
    reachable: Callable[[], bool] = registry_reachable,
    places: Sequence[str] = USUAL_PLACES,
    accepts: Callable[[Version], bool] | None = None,
    target: str | None = None,
) -> Path | None:
    """The mirror to use, or ``None`` for the registry.

    Raises
    ------
    MirrorError
        ``KV_SYNC_TF_PROVIDER_MIRROR`` is unusable, or neither registry nor mirror is found.
    """
    accepts = accepts or accepted_versions()
    target = target or machine_platform()
    home = Path(environ.get("HOME") or Path.home())
    named = environ.get(MIRROR_ENV, "").strip()
    if named:
        if not holds_provider(Path(named), accepts, target):
            raise MirrorError(
                f"terraform: {MIRROR_ENV}={named} holds no usable hashicorp/aws for {target} "
                f"under {PROVIDER_PATH}/<version>/{target}/"
            )
        return Path(named)
    if reachable():
        return None
    usual = [Path(p.replace("~", str(home), 1)) for p in places]
    candidates = [*implied_dirs(environ, home), *(r for p in usual for r in roots_under(p))]
    for root in candidates:
        if holds_provider(root, accepts, target):
            return root
    raise MirrorError(
        f"terraform: {REGISTRY} is unreachable and no hashicorp/aws provider mirror for "
        f"{target} was found in Terraform's implied mirror directories or {SEARCH_DEPTH} levels "
        f"under {', '.join(places)}; on a connected machine run 'terraform -chdir=terraform "
        f"providers mirror DIR', copy DIR here and set {MIRROR_ENV}=DIR"
    )


def cli_config(mirror: Path) -> str:
    """A Terraform CLI configuration that installs hashicorp/aws from ``mirror`` only."""
    path = str(mirror).replace("\\", "\\\\").replace('"', '\\"')
    return (
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path    = "{path}"\n    include = ["hashicorp/aws"]\n  }}\n'
        '  direct {\n    exclude = ["hashicorp/aws"]\n  }\n}\n'
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Print the mirror (nothing for the registry); 1 with one line on stderr when none."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--write-cli-config", type=Path, metavar="PATH")
    args = parser.parse_args(argv)
    try:
        mirror = decide(os.environ)
    except MirrorError as exc:
        print(exc, file=sys.stderr)
        return 1
    if mirror is not None:
        print(mirror)
        if args.write_cli_config:
            args.write_cli_config.write_text(cli_config(mirror))
    return 0


if __name__ == "__main__":
    sys.exit(main())
