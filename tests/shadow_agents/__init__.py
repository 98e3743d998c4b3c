"""Shadow versions for the tests (`OO_AGENT_PACKAGES=tests.shadow_agents`): never in production.

`momentum-14d` shadows `momentum` with a 14-day baseline (a changed agent); `momentum-same`
shadows it with the very same definition (agreement must be exactly 100 %).
"""
