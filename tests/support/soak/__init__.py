"""The seeded soak (issue 25): many consultations back to back between two ``telehealth-agent run``
processes on the development stack, with faults injected at seeded moments. ``runner.soak`` runs
it; scripts/soak.py is its command and tests/integration/soak/test_soak.py its CI-sized run.

- ``sampling``: RSS, open descriptors and threads of a process and its media children; the
  least-squares growth per consultation.
- ``faults``: the fault kinds, the seeded plan of which consultation gets which, and injecting one.
- ``consultation``: one consultation's steps through the two agents' APIs.
- ``ledger``: what each side sent and saw (chat), and the audit trail against the sink.
- ``runner``: the stack, the agents (started again when killed), the loop and the summary.
"""
