"""Triggers: the post-receive hook, the webhooks, and the .buildfarm.yml they read."""
