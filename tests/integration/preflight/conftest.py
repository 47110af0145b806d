"""The development stack for the preflight tests, the kiosk's settings for it, and packet loss on
coturn's relay ports (iptables ``statistic`` match on ``lo``, removed afterwards).
"""

from __future__ import annotations
