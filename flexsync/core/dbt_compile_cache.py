"""What dbt compiles the same way every run, kept between runs: Jinja templates as code,
and the JSON schemas dbt checks its config files against.

Every run is a fresh process, and dbt compiled afresh what it compiled the night before:
each macro and each node's SQL it renders goes through Jinja's parser and code generator
(≈370 templates and ≈0.45 s of CPU in a night's first build), and the JSON schemas of
dbt_project.yml and profiles.yml are generated from dataclasses before every parse
(≈0.2 s). Neither depends on the data: the same text in the same Jinja environment, with
the same versions, compiles to the same code. So both are kept in one file beside dbt's
own partial-parse state in its target path, and the image bakes that file as it bakes
the parse (scripts/bake-compiled-templates.sh: a first and an ordinary night's builds).

Design note (private API): dbt has no hook for either, so two methods are replaced for
the process: `jinja2.Environment.compile` (public, "mainly used internally"), and
`dbtClassMixin.json_schema` (dbt_common). A template is found by a digest of its text,
name, filename and of every setting of its environment that Jinja's lexer, parser and
code generator read; the file is used only when it was written by the same Python and the
same versions of Jinja, dbt, dbt-common, dbt-adapters, dbt-duckdb and mashumaro, and when
its checksum matches (a torn or foreign file is ignored). Should either method be renamed
upstream, nothing is replaced and dbt compiles as before.

The file holds code, read with marshal: it is trusted as dbt trusts the target path it
lies in, whose partial_parse.msgpack holds the macros and SQL dbt runs. Only the run's own
user can write there (the pod's emptyDir, seeded from the read-only image).
"""

from __future__ import annotations

import hashlib
import logging
import marshal
import os
import sys
import tempfile
from pathlib import Path
from types import CodeType
from typing import Any

log = logging.getLogger("flexsync.transform")

FILE_NAME = "flexsync_compiled.marshal"
FORMAT = 1
# Where the target path outlives the process (a developer's target/), edited templates
# would pile up: past this many, a save keeps only what its process used. A night uses
# ≈400, a parse from scratch ≈1,200.
MAX_TEMPLATES = 2500
# Whose versions decide what Jinja and dbt compile (dist-info names, normalised).
_PACKAGES = ("jinja2", "dbt_core", "dbt_common", "dbt_adapters", "dbt_duckdb", "mashumaro")
# What Jinja's lexer, parser and code generator read from the environment.
_ENVIRONMENT_SETTINGS = (
    "block_start_string", "block_end_string", "variable_start_string",
    "variable_end_string", "comment_start_string", "comment_end_string",
    "line_statement_prefix", "line_comment_prefix", "trim_blocks", "lstrip_blocks",
    "newline_sequence", "keep_trailing_newline", "optimized", "is_async",
)


class CompileCache:
    """The templates and schemas of one file, and whether the process added any."""

    def __init__(self, path: Path, tag: str) -> None:
        self.path = path
        self.tag = tag
        self.templates: dict[bytes, bytes] = {}
        self.schemas: dict[str, Any] = {}
        self.used: set[bytes] = set()
        self.hits = 0
        self.misses = 0
        self.changed = False

    def load(self) -> None:
        try:
            data = self.path.read_bytes()
        except OSError:
            return
        digest, payload = data[:32], data[32:]
        if hashlib.sha256(payload).digest() != digest:
            log.debug("ignoring %s: its checksum does not match", self.path)
            return
        try:
            content = marshal.loads(payload)  # noqa: S302 - the module doc says why
        except (EOFError, ValueError, TypeError):
            return
        if not isinstance(content, dict) or content.get("tag") != self.tag:
            log.debug("ignoring %s: written by other versions", self.path)
            return
        templates, schemas = content.get("templates"), content.get("schemas")
        if not (isinstance(templates, dict) and isinstance(schemas, dict)
                and all(type(k) is bytes and type(v) is bytes for k, v in templates.items())
                and all(type(k) is str and type(v) is dict for k, v in schemas.items())):
            log.debug("ignoring %s: not what flexsync writes", self.path)
            return
        self.templates, self.schemas = templates, schemas

    def save(self) -> None:
        """Write the file again if the process compiled anything new (atomically: a
        reader sees the old file or the new one). A target path that cannot be written
        only costs the next run the compiling."""
        if not self.changed:
            return
        if len(self.templates) > MAX_TEMPLATES:
            self.templates = {key: code for key, code in self.templates.items()
                              if key in self.used}
        try:
            payload = marshal.dumps({"tag": self.tag, "templates": self.templates,
                                     "schemas": self.schemas})
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{FILE_NAME}.")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(hashlib.sha256(payload).digest() + payload)
                # mkstemp's 0600 would keep a baked file from the image's run-time user.
                os.chmod(temporary, 0o644)
                os.replace(temporary, self.path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except (OSError, ValueError) as exc:
            log.debug("could not keep dbt's compiled templates in %s: %s", self.path, exc)
            return
        self.changed = False


_cache: CompileCache | None = None


def version_tag() -> str:
    """Python, the cache's format, and the installed versions of what compiles."""
    import jinja2

    site = Path(jinja2.__file__).resolve().parent.parent
    try:
        names = os.listdir(site)
    except OSError:
        names = []
    installed = sorted(name for name in names if name.endswith(".dist-info")
                       and name.split("-", 1)[0].lower() in _PACKAGES)
    return repr((FORMAT, sys.version, marshal.version, installed))


def installed(target_dir: Path) -> CompileCache:
    """The process' cache, reading `target_dir`'s file and replacing the two methods the
    first time (the module doc says why); later calls with another target path move the
    cache there."""
    global _cache
    path = target_dir / FILE_NAME
    if _cache is None:
        _cache = CompileCache(path, version_tag())
        _cache.load()
        try:
            _replace_methods(_cache)
        except (AttributeError, KeyError, ImportError) as exc:  # renamed upstream
            log.debug("dbt's compiled templates are not kept: %r", exc)
    elif _cache.path != path:
        _cache.path = path
        _cache.changed = bool(_cache.templates or _cache.schemas)
    return _cache


def save() -> None:
    """Keep what this process compiled (nothing to do before `installed`)."""
    if _cache is not None:
        if _cache.misses or _cache.hits:
            log.debug("dbt's templates: %d compiled, %d reused from %s", _cache.misses,
                      _cache.hits, _cache.path)
        _cache.save()


def _environment_key(environment: Any) -> tuple[Any, ...]:
    def name_of(value: Any) -> str:
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}"

    kind = type(environment)
    autoescape = environment.autoescape
    return (
        name_of(kind), name_of(environment.code_generator_class),
        sorted(environment.extensions),
        tuple(getattr(environment, setting) for setting in _ENVIRONMENT_SETTINGS),
        autoescape if isinstance(autoescape, bool) else name_of(autoescape),
        None if environment.finalize is None else name_of(environment.finalize),
        # The code generator looks up each filter and test (it may even call one on
        # constants), and how it is called.
        sorted((name, name_of(f), repr(getattr(f, "jinja_pass_arg", None)))
               for name, f in environment.filters.items()),
        sorted((name, name_of(f), repr(getattr(f, "jinja_pass_arg", None)))
               for name, f in environment.tests.items()),
    )


def _replace_methods(cache: CompileCache) -> None:
    import jinja2
    from dbt_common.clients import jinja as dbt_jinja
    from dbt_common.dataclass_schema import dbtClassMixin

    compile_template: Any = jinja2.Environment.compile
    generated = dbtClassMixin.__dict__["json_schema"].__func__

    def compile(self: Any, source: Any, name: str | None = None,
                filename: str | None = None, raw: bool = False,
                defer_init: bool = False) -> Any:
        # dbt's macro debugging puts each compiled template's source in linecache.
        if raw or not isinstance(source, str) or getattr(dbt_jinja, "MACRO_DEBUGGING", False):
            return compile_template(self, source, name, filename, raw, defer_init)
        key = hashlib.sha256(repr((_environment_key(self), source, name, filename,
                                   defer_init)).encode()).digest()
        cache.used.add(key)
        code = cache.templates.get(key)
        if code is not None:
            try:
                compiled = marshal.loads(code)  # noqa: S302 - the module doc says why
            except (EOFError, ValueError, TypeError):
                compiled = None
            if isinstance(compiled, CodeType):
                cache.hits += 1
                return compiled
        compiled = compile_template(self, source, name, filename, raw, defer_init)
        cache.templates[key] = marshal.dumps(compiled)
        cache.misses += 1
        cache.changed = True
        return compiled

    jinja2.Environment.compile = compile  # type: ignore[method-assign,assignment]

    def json_schema(cls: type) -> Any:
        key = f"{cls.__module__}.{cls.__qualname__}"
        schema = cache.schemas.get(key)
        if schema is None:
            schema = generated(cls)
            try:
                marshal.dumps(schema)
            except ValueError:  # a value marshal cannot keep: generated every run
                return schema
            cache.schemas[key] = schema
            cache.changed = True
        return schema

    dbtClassMixin.json_schema = classmethod(json_schema)  # type: ignore[assignment,method-assign]
