"""The `tickets` component: the coalition's ticket issuer and anyone's offline check that a
ticket was issued (SPEC §3.5). Importing the package registers the kind."""

from . import component as component
