"""Real servers for the artifacts integration tests, started and stopped by the tests themselves.

* :mod:`.registry`: Debian's ``docker-registry`` (distribution 2.8) on a loopback port.
* :mod:`.dockerd`: a private Docker engine (own data root, exec root and socket, no bridge, no
  iptables), so a test never touches the machine's own Docker.
* :mod:`.fake_registry`: a small in-process OCI registry with the referrers API and token auth,
  for what the real one cannot show (the API path, a Bearer challenge, a lying registry).
"""
