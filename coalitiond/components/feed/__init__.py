"""The `feed` component: a certified feed its operators publish into (SPEC §5). Importing
the package registers the kind."""

from . import component as component
