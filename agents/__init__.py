"""The detectors: pure logic modules and the Faust agents that wire them."""
