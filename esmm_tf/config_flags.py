"""absl flags generated from a config dataclass: a new option is one field.

An entry point calls ``define_flags(SomeConfig)`` before ``app.run`` and
``config_from_flags(SomeConfig)`` in ``main``; the library only sees the frozen
config. One flag per field, with the field's name and default:

* ``bool``, ``int``, ``float``, ``str`` (each optionally ``| None``) become
  ``DEFINE_bool/integer/float/string``; a ``str`` field whose metadata has
  ``choices`` becomes ``DEFINE_enum``.
* ``tuple[int, ...]`` and ``tuple[str, ...]`` become comma-separated lists
  (``DEFINE_list``), converted back to tuples of that type.
* Help text: the field's ``metadata["help"]`` (``option(default, help, choices)``
  makes such a field), else the comment on the field's
  line (``x: int = 3  # what x is``), else a string literal right below it,
  else the field's name.
* Fields without a default, and the names in ``required``, are required flags.

Only absl and the standard library are imported: the data generators and
converters use this without pulling in TensorFlow.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import sys
import textwrap
import tokenize
import types
import typing
from collections.abc import Iterable

from absl import flags

FLAGS = flags.FLAGS

_SCALARS = {bool: "bool", int: "integer", float: "float", str: "string"}


@dataclasses.dataclass(frozen=True)
class _FlagSpec:
    name: str
    kind: str  # bool, integer, float, string, enum, list
    element: type | None  # list elements' type
    default: typing.Any
    help: str
    choices: tuple[str, ...] | None
    required: bool


def _unwrap_optional(hint) -> tuple[typing.Any, bool]:
    """``(T, True)`` for ``T | None`` (or ``Optional[T]``), else ``(hint, False)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _source_help(cls: type) -> dict[str, str]:
    """Per field: its trailing comment, else the string literal below it ({} without source)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    body = ast.parse(source).body[0].body
    out = {}
    for node, after in zip(body, [*body[1:], None], strict=True):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        lines = range(node.lineno, node.end_lineno + 1)
        text = " ".join(comments[i] for i in lines if i in comments)
        literal = getattr(after, "value", None) if isinstance(after, ast.Expr) else None
        if not text and isinstance(literal, ast.Constant) and isinstance(literal.value, str):
            text = " ".join(literal.value.split())
        if text:
            out[node.target.id] = text
    return out


def _specs(dataclass_type: type, required: Iterable[str], exclude: Iterable[str]):
    if not dataclasses.is_dataclass(dataclass_type):
        raise TypeError(f"{dataclass_type!r} is not a dataclass")
    hints = typing.get_type_hints(dataclass_type)
    comments = _source_help(dataclass_type)
    required, exclude = set(required), set(exclude)
    fields = {f.name: f for f in dataclasses.fields(dataclass_type)}
    unknown = (required | exclude) - set(fields)
    if unknown:
        raise ValueError(f"{dataclass_type.__name__} has no field(s) {', '.join(sorted(unknown))}")
    for field in fields.values():
        if field.name in exclude or not field.init:
            continue
        hint, _ = _unwrap_optional(hints[field.name])
        element = None
        if hint in _SCALARS:
            kind = _SCALARS[hint]
        elif typing.get_origin(hint) is tuple and typing.get_args(hint)[1:] == (Ellipsis,):
            kind, element = "list", typing.get_args(hint)[0]
            if element not in (int, str):
                raise TypeError(f"{dataclass_type.__name__}.{field.name}: unsupported {hint}")
        else:
            raise TypeError(f"{dataclass_type.__name__}.{field.name}: unsupported type {hint}")
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = None
        if kind == "list" and default is not None:
            default = [str(v) for v in default]
        is_required = field.name in required or (
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        )
        if is_required:  # absl: a required flag has no default
            default = None
        choices = field.metadata.get("choices")
        if choices is not None:
            if kind != "string":
                raise TypeError(f"{dataclass_type.__name__}.{field.name}: choices need a str field")
            kind, choices = "enum", tuple(choices)
        yield _FlagSpec(
            name=field.name,
            kind=kind,
            element=element,
            default=default,
            help=field.metadata.get("help") or comments.get(field.name) or field.name,
            choices=choices,
            required=is_required,
        )


def option(default=dataclasses.MISSING, help: str = "", choices=None):  # noqa: A002
    """A config field with its flag's ``help`` (and ``choices``, for a str field):
    ``min_count: int = option(2, "Ids seen fewer times map to OOV.")``; no
    ``default`` makes a required flag."""
    metadata = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    return dataclasses.field(default=default, metadata=metadata)


def define_flags(
    dataclass_type: type,
    flag_values: flags.FlagValues = FLAGS,
    required: Iterable[str] = (),
    exclude: Iterable[str] = (),
    module_name: str | None = None,
) -> list[str]:
    """Defines one flag per field of ``dataclass_type`` (except ``exclude``); returns their names.

    ``required``: fields whose flag must be given although the field has a default.
    ``module_name``: the module the flags belong to in ``--helpshort`` (default: the
    caller, as if it had defined them itself).
    """
    if module_name is None:
        module_name = sys._getframe(1).f_globals.get("__name__", "")
        if module_name == "__main__":  # absl's name for the main module
            module_name = sys.argv[0]
    names = []
    for spec in _specs(dataclass_type, required, exclude):
        kw = {"flag_values": flag_values, "module_name": module_name}
        if spec.kind == "enum":
            flags.DEFINE_enum(spec.name, spec.default, spec.choices, spec.help, **kw)
        else:
            define = getattr(flags, f"DEFINE_{spec.kind}")
            define(spec.name, spec.default, spec.help, **kw)
        if spec.required:
            flags.mark_flag_as_required(spec.name, flag_values=flag_values)
        names.append(spec.name)
    return names


def _convert_list(name: str, values, element: type) -> tuple | None:
    if values is None:
        return None
    if element is str:
        return tuple(values)
    try:
        return tuple(element(v) for v in values)
    except ValueError:
        raise ValueError(
            f"--{name}={','.join(values)}: expected comma-separated {element.__name__}s"
        ) from None


def config_from_flags(dataclass_type: type, flag_values: flags.FlagValues = FLAGS, **overrides):
    """The dataclass built from parsed flags; ``overrides`` replace flag values.

    Fields without a flag (``exclude`` in ``define_flags``) and not in
    ``overrides`` keep their default. The dataclass's own checks run as usual.
    """
    hints = typing.get_type_hints(dataclass_type)
    values = {}
    for field in dataclasses.fields(dataclass_type):
        if field.name in overrides:
            values[field.name] = overrides.pop(field.name)
        elif field.init and field.name in flag_values:
            value = flag_values[field.name].value
            hint, _ = _unwrap_optional(hints[field.name])
            if typing.get_origin(hint) is tuple:
                value = _convert_list(field.name, value, typing.get_args(hint)[0])
            values[field.name] = value
    if overrides:
        raise TypeError(f"{dataclass_type.__name__} has no field(s) {', '.join(sorted(overrides))}")
    return dataclass_type(**values)
