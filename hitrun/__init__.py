"""hitrun: a real-time detector of customer hit-and-run for online shops, on Kafka and Faust.

One installed package: `hitrun.streams` (the worker, its loop and the command line),
`hitrun.agents` (the detectors), `hitrun.schemas` (the event contract) and `hitrun.dev`
(the local broker, the demo and the chaos runs). In the source tree each is a top-level
directory, linked here.
"""
