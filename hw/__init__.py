"""Hardware: the LTE modem AT driver and its simulator, LEDs and GPIO."""
