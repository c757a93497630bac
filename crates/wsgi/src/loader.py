"""Resolve a gunicorn-style app spec to a WSGI callable.

Forms: ``module:name``, ``module:factory()``, ``module:factory('lit', 2, key=None)``
and ``module`` (meaning ``module:application``). Factory arguments are parsed with
``ast.literal_eval``: literals only, never evaluated as code.
"""

import sys

# ast and traceback (with re, enum, tokenize and more behind them) cost a
# worker about 2 MiB: they are imported only when a spec or an error needs them.
# The importlib package (and warnings behind it) is left out too: __import__
# does what import_module does for an absolute name.


class AppLoadError(Exception):
    """The spec is malformed or does not name a callable (no traceback needed)."""


def _parse(spec):
    module_name, sep, target = spec.partition(":")
    module_name = module_name.strip()
    target = target.strip() if sep else "application"
    if not module_name:
        raise AppLoadError(f"no module in app spec {spec!r}; expected MODULE:CALLABLE")
    # The common forms need no parser (ast would also NFKC-normalise a
    # non-ASCII name, so those go through it).
    if target.isascii() and target.isidentifier():
        return module_name, target, False, [], {}
    bare_call = target[:-2].rstrip() if target.endswith("()") else ""
    if bare_call.isascii() and bare_call.isidentifier():
        return module_name, bare_call, True, [], {}
    import ast

    try:
        expr = ast.parse(target, mode="eval").body
    except SyntaxError:
        raise AppLoadError(
            f"cannot read {target!r} in app spec {spec!r} as a name or a call such as create_app()"
        ) from None
    args, kwargs, call = [], {}, False
    if isinstance(expr, ast.Call):
        call = True
        try:
            args = [ast.literal_eval(a) for a in expr.args]
            for kw in expr.keywords:
                if kw.arg is None:
                    raise ValueError("**kwargs")
                kwargs[kw.arg] = ast.literal_eval(kw.value)
        except ValueError:
            raise AppLoadError(
                f"factory arguments in app spec {spec!r} must be literals (strings, numbers, "
                "tuples, lists, dicts, True/False/None)"
            ) from None
        expr = expr.func
    if not isinstance(expr, ast.Name):
        raise AppLoadError(f"{target!r} in app spec {spec!r} must be a name, optionally called")
    return module_name, expr.id, call, args, kwargs


def load(spec):
    module_name, name, call, args, kwargs = _parse(spec)
    __import__(module_name)
    module = sys.modules[module_name]
    try:
        app = getattr(module, name)
    except AttributeError:
        raise AppLoadError(f"module {module_name!r} has no attribute {name!r}") from None
    if call:
        app = app(*args, **kwargs)
        if app is None:
            raise AppLoadError(f"factory {name!r} in module {module_name!r} returned None")
    if not callable(app):
        raise AppLoadError(
            f"{spec!r} is not callable (it is a {type(app).__name__}); a WSGI app is a callable"
        )
    return app


def describe(exc):
    """One line for an exception raised while loading: type, message, and where."""
    if isinstance(exc, AppLoadError):
        return str(exc)
    if isinstance(exc, SyntaxError):
        return f"{type(exc).__name__}: {exc.msg} ({exc.filename}, line {exc.lineno})"
    import traceback

    line = f"{type(exc).__name__}: {exc}"
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if "importlib" not in f.filename and "<frozen" not in f.filename]
    if user and user[-1].filename != __file__:
        line += f" (at {user[-1].filename}:{user[-1].lineno})"
    return line


def full(exc):
    import traceback

    return "".join(traceback.format_exception(exc))
