"""The `almanac` component: a committee's shared ticks, each with its members' signed clocks
(SPEC §3.2). Importing the package registers the kind."""

from . import component as component
