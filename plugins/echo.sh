#!/bin/sh
# Echo: an executable plugin in shell. It prints its request back: the request
# is JSON, so it is a valid result. Useful to see what a plugin receives.
exec cat
