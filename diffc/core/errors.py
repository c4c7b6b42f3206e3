"""The exception hierarchy. Every error diffc raises on purpose is a `DiffcError`."""


class DiffcError(Exception):
    """Base class of every error diffc raises about user input."""


class SignatureError(DiffcError, TypeError):
    """A parameter's annotation is missing or unsupported, or a transform names a bad parameter."""


class ShapeError(DiffcError, ValueError):
    """Array shapes do not fit together inside a traced function."""


class DTypeError(DiffcError, TypeError):
    """Array dtypes do not fit together inside a traced function."""


class TraceError(DiffcError):
    """The traced function did something that cannot be traced (control flow on a value, ...)."""


class ArgumentError(DiffcError, ValueError):
    """A call passed arguments that do not match the signature."""
