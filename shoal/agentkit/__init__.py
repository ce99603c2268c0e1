"""What every member agent shares (the agents are `shoal/plugins/<engine>/agent/`).

Standard library only, and engine-neutral: it runs inside the member containers with the
image's python3. Each engine's image recipe lists `shoal/agentkit` among its `sources`
(plugins/base.py: ImageRecipe), so the member image holds it at /opt/shoal/shoal/agentkit
next to /opt/shoal/agent; with PYTHONPATH=/opt/shoal it is imported there as it is here,
`shoal.agentkit.*` (`shoal` being a namespace package inside the image). Its modules import
one another relatively and nothing else of shoal.

  files.py   files written whole or not at all
  tls.py     the member's TLS bundle (tls.pem) and the server side of the agent API's TLS
  net.py     the container's address on the control network
  server.py  the agent API's bounded threading HTTP(S) server and its request handler base

Nothing is imported here.
"""
