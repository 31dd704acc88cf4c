"""The configuration reference (docs/config.md), rendered from the models themselves.

A test checks that the committed file matches, so the docs cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

from nfs_failover.config import Config

# Sections in the order a reader meets them in a config file.
_ORDER = [
    "Config",
    "Volume",
    "MountSettings",
    "Replica",
    "LocalReplication",
    "AnfReplication",
    "OntapReplication",
    "Policy",
    "PolicyOverride",
    "AutofsSettings",
    "ApiSettings",
    "EtcdSettings",
    "EtcdTls",
    "Hooks",
    "Hook",
    "Group",
]

_HEADER = """\
# Configuration reference

One YAML file; `nfs-failover check-config FILE` validates it and prints one line per
problem (`FILE: field.path: what is wrong`). Unknown keys are errors. Durations are
written `500ms`, `10s`, `5m`, `1h`, `1d`, combinations such as `1m30s`, or plain seconds.
Examples: [examples/crr.yaml](../examples/crr.yaml) (Azure NetApp Files, the seed's
set-up) and [examples/local-lab.yaml](../examples/local-lab.yaml) (the embedded engine).

This file is generated from the models: `nfs-failover config-reference > docs/config.md`.
"""


def render() -> str:
    schema = Config.model_json_schema()
    defs: dict[str, Any] = schema.get("$defs", {})
    models = {"Config": schema, **defs}
    parts = [_HEADER]
    for name in _ORDER + sorted(set(models) - set(_ORDER)):
        model = models.get(name)
        if model is None or "properties" not in model:
            continue
        parts.append(_section(name, model, defs))
    return "\n".join(parts)


def _section(name: str, model: dict[str, Any], defs: dict[str, Any]) -> str:
    title = "top level" if name == "Config" else name
    lines = [f"## {title}", ""]
    description = " ".join(str(model.get("description", "")).split())
    if description and name != "Config":
        lines += [description.replace("``", "`"), ""]
    lines += ["| field | type | default | meaning |", "|---|---|---|---|"]
    required = set(model.get("required", []))
    for field, spec in model["properties"].items():
        default = "required" if field in required else _default(spec)
        meaning = " ".join(str(spec.get("description", "")).split()).replace("|", "\\|")
        lines.append(f"| `{field}` | {_type(spec, defs)} | {default} | {meaning} |")
    return "\n".join(lines) + "\n"


def _default(spec: dict[str, Any]) -> str:
    if "default" not in spec:
        return ""
    value = spec["default"]
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value in ([], {}):
        return "empty"
    if isinstance(value, dict):
        return "see below"
    return f"`{value}`".replace("|", "\\|")


def _type(spec: dict[str, Any], defs: dict[str, Any]) -> str:  # noqa: PLR0911 - a dispatch on schema shape
    if "$ref" in spec:
        target = spec["$ref"].rsplit("/", 1)[-1]
        if "enum" in defs.get(target, {}):
            return _type(defs[target], defs)
        return f"[{target}](#{target.lower()})"
    if "const" in spec or "enum" in spec:
        return " \\| ".join(f"`{v}`" for v in spec.get("enum", [spec.get("const")]))
    union = spec.get("anyOf") or spec.get("oneOf")
    if union:
        if any("pattern" in s and "ms" in s["pattern"] for s in union):
            return "duration"
        return " or ".join(dict.fromkeys(_type(s, defs) for s in union if s.get("type") != "null"))
    if spec.get("type") == "array":
        return f"list of {_type(spec.get('items', {}), defs)}"
    return str(spec.get("type", "any"))
