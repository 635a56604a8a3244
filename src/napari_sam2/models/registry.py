"""The SAM2 / SAM2.1 checkpoints we know of (Meta's official files and micro-sam's light-microscopy model): their
names, sources, licences, preprocessing, the local cache, and fetching them safely.

Listing or downloading models never imports torch. Downloads go through `downloads.fetch` (pooch with a resuming
downloader); the cache folder comes from platformdirs.

Environment variables:
  NAPARI_SAM2_CACHE     folder for downloaded checkpoints and the list of registered local files
                        (default: the platform's cache folder, see `cache_dir`).
  NAPARI_SAM2_BASE_URL  mirror for the official files: replaces the scheme and host of every
                        registry URL and keeps its path, so NAPARI_SAM2_BASE_URL=http://mirror:8000/sam2
                        fetches http://mirror:8000/sam2/segment_anything_2/092824/sam2.1_hiera_tiny.pt.
`download(name, url=...)` fetches one checkpoint from any URL; tests also add entries to `MODELS`.
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError, InputError
from ..progress_bar import TextProgressBar
from .downloads import Progress, check_url, fetch, file_hash, file_sha256

__all__ = [
    "DEFAULT_MODEL", "MODELS", "ModelInfo", "Progress", "TextProgressBar", "cache_dir", "cached_path", "download",
    "file_sha256", "local_models", "model_path", "model_url", "register_local", "resolve_name",
]

_LOCAL_REGISTRY = "local_models.json"

# The model used when none is named: small enough for a laptop CPU.
DEFAULT_MODEL = "sam2.1_hiera_tiny"

META_SOURCE = "Meta AI (facebookresearch/sam2)"


@dataclass(frozen=True)
class ModelInfo:
    """One downloadable checkpoint."""

    name: str  # canonical name: the stem of the official file, e.g. "sam2.1_hiera_tiny"
    config_name: str  # the engine's variant name, e.g. "sam2.1_hiera_t"
    url: str
    # The file's hash as pooch writes it, "ALG:HEX" (e.g. "xxh128:385a..."); a bare hex string is a SHA-256.
    # None where no trusted hash is published (SAM2.0).
    known_hash: str | None
    params_m: float  # millions of parameters (Meta's figures)
    description: str
    aliases: tuple[str, ...] = ()
    source: str = META_SOURCE
    licence: str = "Apache-2.0"
    preprocessing: str = "sam2"  # a profile of napari_sam2.engine.preprocess.PROFILES

    @property
    def filename(self) -> str:
        return self.name + ".pt"

    @property
    def hash_algorithm(self) -> str | None:
        """The hash's algorithm as pooch names it: "sha256", "xxh128", ... (None without a hash)."""
        return None if self.known_hash is None else _split_hash(self.known_hash)[0]

    @property
    def hash_value(self) -> str | None:
        """The hash's hex digits, lowercase (None without a hash)."""
        return None if self.known_hash is None else _split_hash(self.known_hash)[1]

    @property
    def sha256(self) -> str | None:
        """The SHA-256 hex digest when the known hash is one, else None."""
        return self.hash_value if self.hash_algorithm == "sha256" else None


def _split_hash(known_hash: str) -> tuple[str, str]:
    alg, sep, value = known_hash.partition(":")
    if not sep:
        return "sha256", known_hash.lower()
    return alg.lower(), value.lower()


_URL_21 = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
_URL_20 = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/"

MODELS: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        ModelInfo(
            "sam2.1_hiera_tiny", "sam2.1_hiera_t", _URL_21 + "sam2.1_hiera_tiny.pt",
            "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69", 38.9,
            "SAM2.1 tiny: fastest (91 FPS on an A100), least accurate", ("tiny",),
        ),
        ModelInfo(
            "sam2.1_hiera_small", "sam2.1_hiera_s", _URL_21 + "sam2.1_hiera_small.pt",
            "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38", 46.0,
            "SAM2.1 small: fast (85 FPS on an A100)", ("small",),
        ),
        ModelInfo(
            "sam2.1_hiera_base_plus", "sam2.1_hiera_b+", _URL_21 + "sam2.1_hiera_base_plus.pt",
            "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5", 80.8,
            "SAM2.1 base+: balanced (64 FPS on an A100)", ("base_plus", "base+", "b+"),
        ),
        ModelInfo(
            "sam2.1_hiera_large", "sam2.1_hiera_l", _URL_21 + "sam2.1_hiera_large.pt",
            "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318", 224.4,
            "SAM2.1 large: most accurate, slowest (40 FPS on an A100)", ("large",),
        ),
        ModelInfo(
            "sam2_hiera_tiny", "sam2_hiera_t", _URL_20 + "sam2_hiera_tiny.pt", None, 38.9,
            "SAM2 (July 2024) tiny; superseded by sam2.1_hiera_tiny",
        ),
        ModelInfo(
            "sam2_hiera_small", "sam2_hiera_s", _URL_20 + "sam2_hiera_small.pt", None, 46.0,
            "SAM2 (July 2024) small; superseded by sam2.1_hiera_small",
        ),
        ModelInfo(
            "sam2_hiera_base_plus", "sam2_hiera_b+", _URL_20 + "sam2_hiera_base_plus.pt", None, 80.8,
            "SAM2 (July 2024) base+; superseded by sam2.1_hiera_base_plus",
        ),
        ModelInfo(
            "sam2_hiera_large", "sam2_hiera_l", _URL_20 + "sam2_hiera_large.pt", None, 224.4,
            "SAM2 (July 2024) large; superseded by sam2.1_hiera_large",
        ),
        # micro-sam's SAM2.1 tiny fine-tuned on light microscopy (cells and nuclei): URL and hash from micro-sam's
        # registry (micro_sam/v2/util.py, FINETUNED_URLS / FINETUNED_HASHES); the file is
        # {"model": state_dict, "model_type": "hvit_t"}. Its UniSAM2 decoder ("hvit_t_cells_decoder", for
        # micro-sam's automatic segmentation) is not used here.
        ModelInfo(
            "hvit_t_cells", "sam2.1_hiera_t", "https://owncloud.gwdg.de/index.php/s/PJRPRXC3BNOLJ6X/download",
            "xxh128:385a8521cbadad2536b2e7950c394f80", 38.9,
            "micro-sam SAM2.1 tiny fine-tuned on light microscopy (cells, nuclei)", ("micro_sam_cells",),
            source="micro-sam (computational-cell-analytics/micro-sam)",
            licence="not stated (micro-sam code: MIT; base SAM2.1 weights: Apache-2.0)",
            preprocessing="micro_sam",
        ),
    )
}


# ---------------------------------------------------------------- names


def _normalize(name: str) -> str:
    """Fold the spellings people use: case, a '.pt' suffix, Hugging Face's 'facebook/sam2.1-hiera-tiny'."""
    key = str(name).strip().lower()
    key = key.removeprefix("facebook/")
    key = key.removesuffix(".pt")
    return key.replace("-", "_")


def _name_table() -> dict[str, ModelInfo]:
    # Canonical names first, so a short name or alias can never shadow one; a variant's short name (sam2.1_hiera_t)
    # names Meta's file, never a fine-tuned model of the same variant.
    table = {_normalize(info.name): info for info in MODELS.values()}
    for info in MODELS.values():
        official = info.source == META_SOURCE
        for key in ((info.config_name,) if official else ()) + tuple(info.aliases):
            table.setdefault(_normalize(key), info)
    return table


def _find_official(name: str) -> ModelInfo | None:
    return _name_table().get(_normalize(name))


def _valid_names_text() -> str:
    short = dict.fromkeys(info.config_name for info in MODELS.values() if info.source == META_SOURCE)
    text = (
        f"Valid names: {', '.join(MODELS)}; or their short names "
        f"({', '.join(short)}); "
        f"or tiny, small, base_plus, large for SAM2.1"
    )
    try:
        local = sorted(local_models())
    except CheckpointError:  # a broken registry file must not hide the real error
        local = []
    if local:
        text += f"; or a registered local model ({', '.join(local)})"
    return text


def resolve_name(name: str) -> ModelInfo:
    """The official checkpoint called `name` (canonical, short config name or alias; any case)."""
    info = _find_official(name)
    if info is None:
        raise InputError(f"Unknown model {name!r}. {_valid_names_text()}.")
    return info


def model_url(name: str | ModelInfo) -> str:
    """Where `name` is downloaded from, after the NAPARI_SAM2_BASE_URL mirror override."""
    info = name if isinstance(name, ModelInfo) else resolve_name(name)
    base = os.environ.get("NAPARI_SAM2_BASE_URL", "").strip()
    if not base:
        return info.url
    return base.rstrip("/") + urllib.parse.urlsplit(info.url).path


# ---------------------------------------------------------------- cache folder


def cache_dir() -> Path:
    """The folder holding downloaded checkpoints (not created here): NAPARI_SAM2_CACHE, else the user cache folder
    platformdirs gives "napari-sam2" (~/.cache/napari-sam2 or $XDG_CACHE_HOME/napari-sam2, ~/Library/Caches/napari-sam2,
    %LOCALAPPDATA%/napari-sam2/Cache)."""
    override = os.environ.get("NAPARI_SAM2_CACHE", "").strip()
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        # platformdirs' Windows layout (appauthor=False). Its Windows class asks the OS through ctypes, so it only
        # works on Windows itself; the folder is read from LOCALAPPDATA instead, as earlier versions did.
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "napari-sam2" / "Cache"
    # The class is picked here, not once at import as platformdirs.user_cache_dir does: sys.platform is read now.
    from platformdirs.macos import MacOS
    from platformdirs.unix import Unix

    return Path((MacOS if sys.platform == "darwin" else Unix)("napari-sam2", appauthor=False).user_cache_dir)


def cached_path(name: str) -> Path:
    """Where the official checkpoint `name` lives in the cache, whether or not it is there yet."""
    return cache_dir() / resolve_name(name).filename


# ---------------------------------------------------------------- local files registered by name


def _registry_file() -> Path:
    return cache_dir() / _LOCAL_REGISTRY


def local_models() -> dict[str, Path]:
    """Local checkpoint files registered by name (see `register_local`)."""
    path = _registry_file()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CheckpointError(
            f"Cannot read the list of local models {path}: {exc}. Fix its permissions or delete it."
        ) from exc
    try:
        entries = json.loads(text)
        if not isinstance(entries, dict) or not all(isinstance(v, str) for v in entries.values()):
            raise ValueError("not a mapping of names to paths")
    except ValueError as exc:
        raise CheckpointError(
            f"The list of local models {path} is damaged ({exc}). Delete it and register your files again "
            f"with `napari-sam2 models register NAME PATH`."
        ) from exc
    return {name: Path(value) for name, value in entries.items()}


def _find_local(name: str) -> Path | None:
    wanted = str(name).strip().lower()
    for key, path in local_models().items():
        if key.lower() == wanted:
            return path
    return None


def register_local(name: str, path: str | os.PathLike, check_file=None) -> Path:
    """Remember an existing checkpoint file under `name`, so `model_path(name)` finds it. Returns its absolute path.
    ``check_file(path)``, if given, is called on the file before it is registered and may raise (e.g.
    ``models.loaded.checkpoint_variant``: the file must be a SAM2 checkpoint)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", name or ""):
        raise InputError(
            f"Invalid model name {name!r}: use letters, digits and . _ + - only, starting with a letter or digit."
        )
    official = _find_official(name)
    if official is not None:
        raise InputError(
            f"{name!r} is the official model {official.name}. Register your file under another name, or copy it to "
            f"{cache_dir() / official.filename} to use it under the official name."
        )
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise CheckpointError(f"{path} is not an existing file. Give the path of a SAM2 checkpoint (.pt) file.")
    if check_file is not None:
        check_file(file)
    entries = {key: str(value) for key, value in local_models().items() if key.lower() != name.lower()}
    entries[name] = str(file)
    registry = _registry_file()
    try:
        registry.parent.mkdir(parents=True, exist_ok=True)
        tmp = registry.with_name(f"{registry.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, registry)  # a crash mid-write must not lose the other entries
    except OSError as exc:
        raise CheckpointError(
            f"Cannot save the list of local models to {registry}: {exc}. Set NAPARI_SAM2_CACHE to a writable folder."
        ) from exc
    return file


# ---------------------------------------------------------------- finding a checkpoint


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.lower().endswith((".pt", ".pth"))


def _manual_fetch_hint(url: str, dest: Path) -> str:
    return (
        f"To get it by hand, fetch {url} (on any computer with internet) and save it as {dest}; "
        f"or pass the path of a local copy instead of the model name, "
        f"or register one with `napari-sam2 models register NAME PATH`."
    )


def model_path(name_or_path: str | os.PathLike, download: bool = True, progress: Progress | None = None) -> Path:
    """The checkpoint file for an existing path, a registered local name or an official name.

    An official checkpoint comes from the cache (verified against its known hash once) or, when `download`
    is true, is downloaded into it.
    """
    text = os.fspath(name_or_path)
    given = Path(text).expanduser()
    if given.is_file():
        return given
    local = _find_local(text)
    if local is not None:
        if local.is_file():
            return local
        raise CheckpointError(
            f"Model {text!r} is registered as {local}, but that file no longer exists. "
            f"Register it again with `napari-sam2 models register {text} NEW_PATH`."
        )
    info = _find_official(text)
    if info is None:
        if _looks_like_path(text):
            raise CheckpointError(
                f"Checkpoint file {text} does not exist. Check the path, or give a model name. {_valid_names_text()}."
            )
        raise InputError(f"Unknown model {text!r}. {_valid_names_text()}, or the path of a checkpoint file.")
    dest = cache_dir() / info.filename
    if dest.is_file():
        _verify_cached(dest, info)
        return dest
    if not download:
        raise CheckpointError(
            f"Checkpoint {info.name} is not downloaded yet: run `napari-sam2 models download {info.name}`. "
            + _manual_fetch_hint(model_url(info), dest)
        )
    return _download(info, progress=progress)


# ---------------------------------------------------------------- hashes


def _stamp_path(path: Path, alg: str = "sha256") -> Path:
    return path.with_name(f"{path.name}.{alg}")


def _write_stamp(path: Path, digest: str, alg: str = "sha256") -> None:
    """Record that `path`, at its current size and mtime, has hash `digest`, so it is not hashed again."""
    try:
        stat = path.stat()
        record = {alg: digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        _stamp_path(path, alg).write_text(json.dumps(record) + "\n", encoding="utf-8")
    except OSError:
        pass  # a read-only cache still works; the file is just hashed again next time


def _stamp_says(path: Path, digest: str, alg: str = "sha256") -> bool:
    try:
        record = json.loads(_stamp_path(path, alg).read_text(encoding="utf-8"))
        stat = path.stat()
        return record == {alg: digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    except (OSError, ValueError):
        return False


def _verify_cached(path: Path, info: ModelInfo) -> None:
    alg, expected = info.hash_algorithm, info.hash_value
    if expected is None or _stamp_says(path, expected, alg):
        return
    digest = file_sha256(path) if alg == "sha256" else file_hash(path, alg)
    if digest != expected:
        name = "SHA-256" if alg == "sha256" else alg
        raise CheckpointError(
            f"The cached checkpoint {path} is corrupt or incomplete ({name} {digest}, expected {expected}). "
            f"Download it again with `napari-sam2 models download {info.name} --force`."
        )
    _write_stamp(path, digest, alg)


# ---------------------------------------------------------------- downloading


def download(name: str, progress: Progress | None = None, force: bool = False, url: str | None = None) -> Path:
    """Download the official checkpoint `name` into the cache and return its path.

    Resumes an interrupted download, retries dropped connections, checks the known hash (pooch: SHA-256, or
    xxh128 for micro-sam's files),
    and only then moves the file into place, so the cached path never holds a broken file.
    A file already cached is verified and returned unless `force`. `url` replaces the source.
    """
    return _download(resolve_name(name), progress=progress, force=force, url=url)


def _download(info: ModelInfo, progress: Progress | None = None, force: bool = False, url: str | None = None) -> Path:
    dest = cache_dir() / info.filename
    if dest.is_file() and not force:
        _verify_cached(dest, info)
        return dest
    source = url or model_url(info)
    hint = _manual_fetch_hint(source, dest)
    check_url(source)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if force:
            dest.unlink(missing_ok=True)  # pooch would keep a file whose hash matches, or that has no hash to check
    except OSError as exc:
        raise CheckpointError(f"Cannot write to {dest.parent}: {exc}. Set NAPARI_SAM2_CACHE to a writable folder.") from exc
    fetch(source, dest, info.known_hash, progress, hint)
    if info.known_hash:
        _write_stamp(dest, info.hash_value, info.hash_algorithm)  # pooch checked the hash: never hash it again
    return dest
