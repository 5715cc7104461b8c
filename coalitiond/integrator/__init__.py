"""What an integrator or auditor runs to read a committee without trusting it: `client`
(fetch over the HTTP read API, then verify every answer against the committee's keys and
quorum alone) and `archive_compare` (where two members' Chronicle archives differ, entry by
entry). Public import paths: `coalitiond.client` and `coalitiond.verify`."""
