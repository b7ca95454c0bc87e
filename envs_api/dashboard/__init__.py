"""The browser side: the landing page at / and the dashboard at /dashboard/."""
