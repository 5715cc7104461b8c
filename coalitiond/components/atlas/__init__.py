"""The `atlas` component: the coalition's directory of citizen cards (SPEC §3.1). Importing
the package registers the kind."""

from . import component as component
