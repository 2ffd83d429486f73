"""The FIX 4.4 front: order entry and drop copy for the FIX engines clients already run.

``codec`` (tag=value framing, sans-IO), ``store`` (sequence numbers and sent messages that
survive a restart), ``orders`` (the tag mapping), ``session`` (logon, sequencing, resend,
heartbeats) and ``acceptor`` (the port, timers, drop copy). The README's "FIX" section is the
client's view of all of it.
"""
