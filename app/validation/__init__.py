"""Results checked before they are given or paid: the policy (``policy``, plain Python), its
settings (``settings``) and its application to entered results (``checks``)."""
