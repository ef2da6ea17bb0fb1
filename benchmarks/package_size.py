"""Package: the deployment zip's size, unpacked size and largest packages.

Builds the zip as deployed (``build_lambda.sh`` defaults: arm64, CPython 3.12,
AWS SDK left out; Terraform's ``lambda_architecture``/``lambda_runtime``
defaults) and, for comparison, with ``--include-sdk``.

The floor is the smallest zip a function doing the same I/O could ship: its own
code (the ``kv_sync`` package) plus ``requests`` and its dependencies (urllib3,
idna, charset_normalizer, certifi), boto3 coming from the runtime; it is
measured from the same zip's entries. Also printed: what tracing ships
(``aws_xray_sdk`` and ``wrapt``, which Powertools' Tracer needs).

Target: zip <= 5 MB without the SDK.
"""

from __future__ import annotations

import re
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._support import common, package  # noqa: E402

TARGET_BYTES = 5 * 1000 * 1000
ARCH, PYTHON = "arm64", "3.12"
FLOOR_PACKAGES = {"requests", "urllib3", "idna", "charset_normalizer", "certifi"}
TRACING_PACKAGES = ("aws_xray_sdk", "wrapt")
FUNCTION = "kv_sync (function code)"
MB = 1000 * 1000


def main() -> int:
    parser = common.parser(__doc__ or "")
    parser.add_argument("--no-sdk-build", action="store_true", help="skip the --include-sdk build")
    args = common.parse(parser)
    print(f"Package: build_lambda.sh --arch {ARCH} --python-version {PYTHON}")
    common.print_machine()

    deployed = package.build_zip(arch=ARCH, python=PYTHON)
    packages = by_package(deployed)
    zipped = deployed.stat().st_size
    unpacked = sum(size for size, _ in packages.values())
    own = packages.get(FUNCTION, (0, 0))
    floor_zip = sum(c for name, (_, c) in packages.items() if name in FLOOR_PACKAGES) + own[1]
    floor_unpacked = sum(s for name, (s, _) in packages.items() if name in FLOOR_PACKAGES) + own[0]

    rows = [
        [
            "floor (own code + requests and its deps)",
            floor_zip / MB,
            floor_unpacked / MB,
            "1.00",
            "-",
        ],
        [
            "lambda_function.zip (no SDK)",
            zipped / MB,
            unpacked / MB,
            f"{zipped / floor_zip:.2f}",
            f"{zipped / TARGET_BYTES:.2f}",
        ],
    ]
    if not (args.quick or args.no_sdk_build):
        with_sdk = package.build_zip(arch=ARCH, python=PYTHON, include_sdk=True)
        sdk_unpacked = sum(size for size, _ in by_package(with_sdk).values())
        rows.append(
            [
                "with --include-sdk",
                with_sdk.stat().st_size / MB,
                sdk_unpacked / MB,
                f"{with_sdk.stat().st_size / floor_zip:.2f}",
                f"{with_sdk.stat().st_size / TARGET_BYTES:.2f}",
            ]
        )
    common.print_table(
        "Package size (MB = 10^6 bytes)",
        ["what", "zip", "unpacked", "zip x floor", "zip x 5 MB target"],
        rows,
    )
    largest = sorted(packages.items(), key=lambda item: -item[1][0])[:5]
    common.print_table(
        "Five largest packages in the zip",
        ["package", "unpacked MB", "compressed MB", "share of the zip"],
        [[name, size / MB, comp / MB, f"{comp / zipped:.0%}"] for name, (size, comp) in largest],
    )
    with zipfile.ZipFile(deployed) as archive:
        count = len(archive.infolist())
        pyc = sum(1 for info in archive.infolist() if info.filename.endswith(".pyc"))
    print(f"\n{count} files, {pyc} of them .pyc")
    tracing = [packages.get(name, (0, 0)) for name in TRACING_PACKAGES]
    print(
        f"tracing ({' + '.join(TRACING_PACKAGES)}): {sum(c for _, c in tracing) / MB:.2f} MB "
        f"of the zip ({sum(s for s, _ in tracing) / MB:.2f} MB unpacked); the function's own "
        f"code: {own[1] / MB:.2f} MB ({own[0] / MB:.2f} MB unpacked)"
    )
    return common.report_targets(
        [common.Target("zip size without the SDK", zipped / MB, TARGET_BYTES / MB, " MB")],
        strict=args.strict,
    )


def by_package(zip_path: Path) -> dict[str, tuple[int, int]]:
    """(unpacked, compressed) bytes per top-level package, dist-info folded in."""
    sizes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    with zipfile.ZipFile(zip_path) as archive:
        infos = archive.infolist()
        owners = _dist_info_owners(archive)
        for info in infos:
            top, _, rest = info.filename.partition("/")
            if top.endswith(".dist-info"):
                name = owners.get(top, top)
            elif top == "kv_sync":
                name = FUNCTION
            elif top == "__pycache__":  # byte-code of a top-level module
                name = rest.split(".", 1)[0]
            elif not rest and top.endswith(".py"):
                name = top[:-3]
            else:
                name = top
            sizes[name][0] += info.file_size
            sizes[name][1] += info.compress_size
    return {name: (size, comp) for name, (size, comp) in sizes.items()}


def _dist_info_owners(archive: zipfile.ZipFile) -> dict[str, str]:
    """Each ``*.dist-info`` folder mapped to the package it installed (top_level.txt)."""
    owners = {}
    for info in archive.infolist():
        folder, _, rest = info.filename.partition("/")
        if folder.endswith(".dist-info") and rest == "top_level.txt":
            names = archive.read(info).decode().split()
            if names:
                owners[folder] = names[0]
    for info in archive.infolist():
        folder = info.filename.split("/", 1)[0]
        if folder.endswith(".dist-info") and folder not in owners:
            dist = re.sub(r"-[^-]+\.dist-info$", "", folder).replace("-", "_").lower()
            owners[folder] = dist
    return owners


if __name__ == "__main__":
    sys.exit(main())
