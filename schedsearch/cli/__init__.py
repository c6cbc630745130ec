"""The schedsearch command line."""
