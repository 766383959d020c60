"""Typed configuration of every stage: dataclass schemas, YAML files and `key=value` overrides through OmegaConf.

Precedence is schema defaults < `--config` file < command line. Each field is declared once, here, with the
docstring under it that `lift config show STAGE` prints. The embedded defaults run the toy world with the tiny
model zoo on a laptop; `configs/cluster/*.yaml` point the same schemas at real models and s3:// URLs.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import inspect
import itertools
import json
import math
import typing
from dataclasses import fields, is_dataclass

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from lift.io import storage


class ConfigError(ValueError):
    """A config that cannot be used; the message names the source, the key and, where known, the line."""


def _keys(schema: type, prefix: str = "") -> list[str]:
    out = []
    for f in fields(schema):
        key = f"{prefix}{f.name}"
        out.append(key)
        sub = _nested_type(schema, f)
        if sub is not None:
            out.extend(_keys(sub, key + "."))
    return out


def _nested_type(schema: type, f) -> type | None:
    t = typing.get_type_hints(schema).get(f.name, f.type)
    return t if is_dataclass(t) else None


def _yaml_line(text: str, key: str) -> int | None:
    """1-based line of a dotted key in a YAML document, so errors can point into the user's file."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in key.split("."):
        if not isinstance(node, yaml.MappingNode):
            break
        for k, v in node.value:
            if k.value == part:
                line, node = k.start_mark.line + 1, v
                break
        else:
            break
    return line


def _explain(exc: OmegaConfBaseException, schema: type, source: str, text: str | None) -> ConfigError:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None) or "?"
    where = source
    if text is not None:
        line = _yaml_line(text, str(key))
        if line:
            where = f"{source}, line {line}"
    if isinstance(exc, ConfigKeyError):
        valid = _keys(schema)
        parent = str(key).rpartition(".")[0]
        siblings = [k for k in valid if k.rpartition(".")[0] == parent]
        leaf = str(key).rpartition(".")[2]
        close = difflib.get_close_matches(leaf, [s.rpartition(".")[2] for s in siblings], n=1, cutoff=0.6)
        if not close:
            close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys here: {', '.join(siblings) or '-'}"
        return ConfigError(f"{where}: unknown config key '{key}'{hint}")
    reason = str(exc).splitlines()[0]
    if isinstance(exc, ValidationError):
        return ConfigError(f"{where}: bad value for '{key}': {reason}")
    return ConfigError(f"{where}: config key '{key}': {reason}")


def load(schema: type, config_url: str | None = None, overrides: list[str] | None = None) -> DictConfig:
    """Schema defaults < config file < `key=value` overrides, validated against the schema (a dataclass).

    Interpolations are resolved here so that a reference to a missing key fails before any work starts.
    """
    cfg, text = OmegaConf.structured(schema), None
    if config_url:
        text = storage.read_text(config_url)
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f", line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{config_url}{line}: invalid YAML: {getattr(e, 'problem', e)}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{config_url}: a config file must be a YAML mapping, got {type(loaded).__name__}")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.create(loaded or {}))
        except OmegaConfBaseException as e:
            raise _explain(e, schema, config_url, text) from None
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"command line: '{item}' is not a key=value override")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as e:
            raise _explain(e, schema, "command line", None) from None
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        raise _explain(e, schema, config_url or "config", None) from None
    bad = next(itertools.chain(_out_of_range(schema, cfg), _bad_urls(cfg)), None)
    if bad:
        key, problem = bad
        raise ConfigError(f"{_source(key, config_url, text, overrides or [])}: bad value for '{key}': {problem}")
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _source(key: str, config_url: str | None, text: str | None, overrides: list[str]) -> str:
    """Where a key's value was set: the command line, a line of the config file, or the defaults."""
    key = key.split("[")[0]  # an element of a list is set with its list
    if any(item.partition("=")[0].strip() in (key, key.rpartition(".")[0]) for item in overrides):
        return "command line"
    line = _yaml_line(text, key) if text is not None else None
    return f"{config_url}, line {line}" if line else config_url or "defaults"


def _out_of_range(schema: type, node: DictConfig, prefix: str = ""):
    """(key, problem) of every numeric value outside the range its field declares (`schema.Range`); lists and
    mappings of numbers are checked value by value."""
    for f in fields(schema):
        key, sub = f"{prefix}{f.name}", _nested_type(schema, f)
        if sub is not None:
            yield from _out_of_range(sub, node[f.name], key + ".")
            continue
        bounds = f.metadata.get("range")
        value = node[f.name]
        if bounds is None or value is None:
            continue
        if isinstance(value, DictConfig):
            items = [(f".{name}", v) for name, v in value.items()]
        else:
            items = [(f"[{i}]", v) for i, v in enumerate(value)] if isinstance(value, ListConfig) else [("", value)]
        for suffix, v in items:
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v in bounds):
                yield key + suffix, f"{v!r} is out of range: expected {bounds}"


def _bad_urls(cfg: DictConfig):
    """(key, problem) of every URL value whose scheme is unknown (`storage.scheme_problem`); a comma-separated list
    (the release's video parts) is checked URL by URL. A scheme whose package is missing here is named when a URL
    is used: a config for a cluster's image (gs:// with gcsfs there) still loads where it is only submitted."""
    def leaves(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            elif isinstance(value, str):
                yield f"{prefix}{key}", value

    for key, value in leaves(OmegaConf.to_container(cfg, resolve=True)):
        for url in (u.strip() for u in value.split(",") if "://" in u):
            if problem := storage.scheme_problem(url, installed=False):
                yield key, f"{url}: {problem}"


def section(cfg: DictConfig, key: str, schema: type) -> DictConfig:
    """A stage's own config (section `key`) out of a resolved pipeline config, validated against its schema."""
    merged = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.to_container(cfg[key], resolve=True))
    OmegaConf.set_readonly(merged, True)
    return merged


def config_hash(cfg: DictConfig) -> str:
    """Identity of what a stage would produce; a marker with the same hash means the work is already done."""
    blob = json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _field_docs(schema: type) -> dict[str, str]:
    """Attribute docstrings (the string literal under each field, read from the schema's source), or the `doc` of
    a field's metadata for a schema made at run time (the pipeline's, composed from the stage registry)."""
    docs = {f.name: f.metadata["doc"] for f in fields(schema) if "doc" in f.metadata}
    try:
        tree = ast.parse(inspect.getsource(schema))
    except (OSError, TypeError):
        return docs
    body = tree.body[0].body
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _type_name(schema: type, name: str) -> str:
    hint = schema.__annotations__[name]
    return hint if isinstance(hint, str) else getattr(hint, "__name__", str(hint))


def show(schema: type, cfg: DictConfig | None = None) -> str:
    """A config of `schema` as YAML (its defaults when `cfg` is None), each key under a comment with its type and
    meaning."""
    cfg = cfg if cfg is not None else OmegaConf.structured(schema)
    lines = [f"# {inspect.getdoc(schema).splitlines()[0]}"]
    _show(schema, cfg, 0, lines)
    return "\n".join(lines) + "\n"


def _show(schema: type, node: DictConfig, depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    docs = _field_docs(schema)
    for f in fields(schema):
        sub = _nested_type(schema, f)
        if sub is not None:
            lines.append(f"{pad}# {inspect.getdoc(sub).splitlines()[0]}")
            lines.append(f"{pad}{f.name}:")
            _show(sub, node[f.name], depth + 1, lines)
            continue
        lines.append(f"{pad}# {docs.get(f.name, '')} [{_type_name(schema, f.name)}]".replace("#  [", "# ["))
        value = OmegaConf.to_container(node, resolve=False)[f.name]
        dumped = yaml.safe_dump({f.name: value}, default_flow_style=True, sort_keys=False, width=1 << 16)
        lines.append(pad + dumped.strip().removeprefix("{").removesuffix("}"))


def save(cfg: DictConfig, url: str) -> None:
    """The resolved config next to an output, so every artefact says how it was made."""
    storage.write_text(url, OmegaConf.to_yaml(cfg, resolve=True))

