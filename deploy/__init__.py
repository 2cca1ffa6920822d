"""Deployment files (nginx config, guide) and deploy/stack.py, the throwaway local stack the tests use."""
