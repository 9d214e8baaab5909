"""Built-in value transforms, and the registry user transforms join (see :mod:`.registry` for
the contract of a transform). Split by family: :mod:`.text`, :mod:`.contact` (email, phone,
names, countries; :mod:`.contact_parse` parses the first two), :mod:`.dates`, :mod:`.casts`;
:mod:`.registry` holds the names."""

from crossfade.config.mapping import ENTRY_POINT_GROUP
from crossfade.mapping.transforms.base import (
    CACHE_SIZE,
    Transform,
    TransformError,
    TransformFactory,
    short_repr,
    text_of,
)
from crossfade.mapping.transforms.casts import (
    CASTS,
    cast,
)
from crossfade.mapping.transforms.contact import (
    clear_caches,
    country,
    email,
    is_valid_email,
    name,
    phone,
    split_name,
    split_name_parts,
)
from crossfade.mapping.transforms.dates import (
    date,
    datetime,
)
from crossfade.mapping.transforms.registry import (
    BUILTINS,
    EXAMPLES,
    IMPORT_PATH_RE,
    OUTPUT_TYPES,
    Registry,
    chain,
    validating,
)
from crossfade.mapping.transforms.text import (
    casefold,
    coalesce,
    collapse_whitespace,
    concat,
    const,
    default,
    digits,
    lookup,
    lower,
    null_if,
    replace,
    strip_accents,
    trim,
    truncate,
    upper,
)

__all__ = [
    "BUILTINS",
    "CACHE_SIZE",
    "CASTS",
    "ENTRY_POINT_GROUP",
    "EXAMPLES",
    "IMPORT_PATH_RE",
    "OUTPUT_TYPES",
    "Registry",
    "Transform",
    "TransformError",
    "TransformFactory",
    "casefold",
    "cast",
    "chain",
    "clear_caches",
    "coalesce",
    "collapse_whitespace",
    "concat",
    "const",
    "country",
    "date",
    "datetime",
    "default",
    "digits",
    "email",
    "is_valid_email",
    "lookup",
    "lower",
    "name",
    "null_if",
    "phone",
    "replace",
    "short_repr",
    "split_name",
    "split_name_parts",
    "strip_accents",
    "text_of",
    "trim",
    "truncate",
    "upper",
    "validating",
]
