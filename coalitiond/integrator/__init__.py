"""What an integrator runs to read a committee without trusting it: fetch over the HTTP
read API, then verify every answer against the committee's keys and quorum alone.
Public import paths: `coalitiond.client` and `coalitiond.verify`."""
