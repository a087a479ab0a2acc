"""The Faust shell of hitrun: app, settings, topics, codec, dead letters, web views and CLI."""
