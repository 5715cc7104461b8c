"""The `chronicle` component: the coalition's tamper-evident audit log and its anchors
(SPEC §3.3), and where a member hands those anchors (`anchors`: sinks and the publisher,
imported only by the member). Importing the package registers the kind."""

from . import component as component
