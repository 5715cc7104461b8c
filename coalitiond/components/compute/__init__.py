"""The `compute` component: a registry of providers and a deterministic scheduler (SPEC
§3.4), and the member-side full check of providers' TDX quotes before voting (`quotes`,
imported only by the member). Importing the package registers the kind."""

from . import component as component
