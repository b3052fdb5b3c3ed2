"""The DICOM node's configuration: one TOML file (README, "As a DICOM node"), read with the standard
library's ``tomllib`` (Python 3.11+; ``tomli`` where it is installed on older Pythons).

Every value is checked here, once, so that the receiver, queue, worker and sender trust what they get and
a bad file is refused with one sentence naming the key before the node listens."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

from headseg.errors import InputError

if TYPE_CHECKING:
    from headseg.run.cluster import ClusterSpec

__all__ = ["NodeConfig", "Route", "Destination", "load_config", "parse_config"]

EXPORT_FORMATS = ("rtstruct", "dicom-seg")
AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # DICOM AE: 16 printable characters, no backslash


@dataclass(frozen=True)
class Destination:
    """Where results go: a DICOM node (C-STORE) or a folder."""

    name: str
    ae_title: str = ""
    host: str = ""
    port: int = 0
    folder: Optional[Path] = None

    @property
    def is_folder(self) -> bool:
        return self.folder is not None


@dataclass(frozen=True)
class Route:
    """Which series a task takes: matched on the called AE title and/or the series' own attributes.
    Every given condition must hold; an empty condition holds for all."""

    task: str
    called_ae: Tuple[str, ...] = ()
    modality: Tuple[str, ...] = ()
    body_part: Tuple[str, ...] = ()
    series_description: Optional[str] = None  # a regular expression, searched
    model: Optional[str] = None
    structures: Optional[Tuple[str, ...]] = None
    export: Tuple[str, ...] = ("rtstruct",)
    send_to: Tuple[str, ...] = ()

    def matches(self, called_ae: str, attributes: Mapping[str, str]) -> bool:
        def within(values: Tuple[str, ...], actual: str) -> bool:
            return not values or actual.strip().upper() in {v.upper() for v in values}

        if not within(self.called_ae, called_ae) or not within(self.modality, attributes.get("Modality", "")):
            return False
        if not within(self.body_part, attributes.get("BodyPartExamined", "")):
            return False
        if self.series_description is not None:
            return re.search(self.series_description, attributes.get("SeriesDescription", "")) is not None
        return True


@dataclass(frozen=True)
class NodeConfig:
    """All settings of ``headseg serve``."""

    folder: Path
    ae_title: str = "HEADSEG"
    host: str = "127.0.0.1"
    port: int = 11112
    quiet_seconds: float = 5.0
    complete_on_release: bool = False
    max_disk_mb: float = 20000.0
    max_instance_mb: float = 64.0
    max_series_instances: int = 2000
    workers: int = 1
    cluster: Optional[ClusterSpec] = None  # the Dask cluster jobs run on (None: this process)
    device: str = "cpu"
    model_dirs: Tuple[str, ...] = ()
    allowed_ae_titles: Tuple[str, ...] = ()
    allowed_hosts: Tuple[str, ...] = ()
    routes: Tuple[Route, ...] = ()
    destinations: Dict[str, Destination] = field(default_factory=dict)
    send_retries: int = 5
    send_backoff_seconds: float = 2.0
    send_backoff_max_seconds: float = 300.0

    def route_for(self, called_ae: str, attributes: Mapping[str, str]) -> Optional[Route]:
        """The first route that matches, or None (the series is kept and reported, never guessed)."""
        return next((r for r in self.routes if r.matches(called_ae, attributes)), None)

    def host_allowed(self, host: str) -> bool:
        if not self.allowed_hosts:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in ipaddress.ip_network(net, strict=False) for net in self.allowed_hosts)


def load_config(path: Any) -> NodeConfig:
    """Read and check the TOML file at ``path``."""
    try:
        import tomllib  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # Python < 3.11
        try:
            import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ImportError:
            raise InputError("Reading the node's TOML config needs Python 3.11 or the 'tomli' package.") from None
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise InputError(f"Cannot read the node config {path}: {exc.strerror or exc}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"The node config {path} is not valid TOML ({exc}).") from None
    return parse_config(data, base=path.parent)


def _strings(value: Any, key: str) -> Tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"Node config: '{key}' must be a string or a list of strings.")
    return tuple(v.strip() for v in value)


def _number(section: Mapping[str, Any], key: str, default: float, minimum: float = 0.0) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise InputError(f"Node config: '{key}' must be a number of at least {minimum:g}.")
    return float(value)


def _ae(value: Any, key: str) -> str:
    if not isinstance(value, str) or not AE_TITLE.match(value.strip()):
        raise InputError(f"Node config: '{key}' must be an AE title of 1 to 16 printable characters.")
    return value.strip()


def _route(item: Mapping[str, Any], n: int, destinations: Mapping[str, Destination]) -> Route:
    where = f"route {n + 1}"
    task = item.get("task")
    if task not in ("orbit", "han"):
        raise InputError(f"Node config: {where} needs task = \"orbit\" or \"han\".")
    export = _strings(item.get("export", ["rtstruct"]), f"{where}.export")
    unknown = [e for e in export if e not in EXPORT_FORMATS]
    if unknown or not export:
        raise InputError(f"Node config: {where}.export may name {' and '.join(EXPORT_FORMATS)}, not {unknown}.")
    send_to = _strings(item.get("send_to"), f"{where}.send_to")
    missing = [d for d in send_to if d not in destinations]
    if missing:
        raise InputError(f"Node config: {where} sends to {missing[0]!r}, which no [destination.*] defines.")
    description = item.get("series_description")
    if description is not None:
        try:
            re.compile(str(description))
        except re.error as exc:
            raise InputError(f"Node config: {where}.series_description is not a regular expression ({exc}).") from None
    structures = _strings(item.get("structures"), f"{where}.structures") or None
    return Route(str(task), tuple(_ae(a, f"{where}.called_ae") for a in _strings(item.get("called_ae"), where)),
                 _strings(item.get("modality"), f"{where}.modality"),
                 _strings(item.get("body_part"), f"{where}.body_part"),
                 None if description is None else str(description), item.get("model"), structures, export, send_to)


def _destination(name: str, item: Mapping[str, Any], base: Path) -> Destination:
    if "folder" in item:
        return Destination(name, folder=(base / str(item["folder"])).resolve())
    port = item.get("port")
    if not isinstance(port, int) or not 0 < port < 65536 or not isinstance(item.get("host"), str):
        raise InputError(f"Node config: destination {name!r} needs host, port (1-65535) and ae_title, or a folder.")
    return Destination(name, _ae(item.get("ae_title"), f"destination.{name}.ae_title"), item["host"], port)


def _cluster(value: Any) -> Optional[ClusterSpec]:
    """The ``cluster`` setting, parsed as ``--cluster`` is (``local:N`` or a scheduler address)."""
    if not value:
        return None
    from headseg.run.cluster import parse_cluster

    return parse_cluster(str(value), setting="Node config: cluster")


def parse_config(data: Mapping[str, Any], base: Path = Path(".")) -> NodeConfig:
    """A :class:`NodeConfig` from the parsed TOML ``data`` (relative folders are relative to ``base``)."""
    node = data.get("node", {})
    if "folder" not in node:
        raise InputError("Node config: [node] needs 'folder', where received series and jobs are kept.")
    allow, send = data.get("allow", {}), data.get("send", {})
    destinations = {name: _destination(name, item, base) for name, item in data.get("destination", {}).items()}
    routes = tuple(_route(item, n, destinations) for n, item in enumerate(data.get("route", [])))
    if not routes:
        raise InputError("Node config: at least one [[route]] must say which task a series goes to.")
    for host in _strings(allow.get("hosts"), "allow.hosts"):
        try:
            ipaddress.ip_network(host, strict=False)
        except ValueError:
            raise InputError(f"Node config: allow.hosts entry {host!r} is not an IP address or network.") from None
    port = node.get("port", 11112)
    if not isinstance(port, int) or not 0 <= port < 65536:
        raise InputError("Node config: 'port' must be a number from 0 to 65535.")
    workers = int(_number(node, "workers", 1, 1))
    return NodeConfig(
        folder=(base / str(node["folder"])).resolve(), ae_title=_ae(node.get("ae_title", "HEADSEG"), "ae_title"),
        host=str(node.get("host", "127.0.0.1")), port=port,
        quiet_seconds=_number(node, "quiet_seconds", 5.0), complete_on_release=bool(node.get("complete_on_release")),
        max_disk_mb=_number(node, "max_disk_mb", 20000.0, 1), max_instance_mb=_number(node, "max_instance_mb", 64.0, 0.01),
        max_series_instances=int(_number(node, "max_series_instances", 2000, 1)), workers=workers,
        cluster=_cluster(node.get("cluster")), device=str(node.get("device", "cpu")),
        model_dirs=tuple(str((base / d).resolve()) for d in _strings(node.get("model_dirs"), "model_dirs")),
        allowed_ae_titles=tuple(_ae(a, "allow.ae_titles") for a in _strings(allow.get("ae_titles"), "allow.ae_titles")),
        allowed_hosts=_strings(allow.get("hosts"), "allow.hosts"), routes=routes, destinations=destinations,
        send_retries=int(_number(send, "retries", 5)), send_backoff_seconds=_number(send, "backoff_seconds", 2.0),
        send_backoff_max_seconds=_number(send, "backoff_max_seconds", 300.0))


def describe(config: NodeConfig) -> List[str]:
    """What the node will do, for its first log lines (no patient data: settings only)."""
    lines = [f"AE {config.ae_title} on {config.host}:{config.port}, folder {config.folder}"]
    for route in config.routes:
        conditions: Sequence[str] = [f"{k}={v}" for k, v in (("called_ae", route.called_ae), ("modality", route.modality),
                                                             ("body_part", route.body_part)) if v]
        lines.append(f"route {route.task}: {' '.join(conditions) or 'any series'} -> {','.join(route.export)} "
                     f"to {','.join(route.send_to) or 'the job folder only'}")
    return lines
