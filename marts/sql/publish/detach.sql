-- Close the published file so it can be moved into place.
DETACH {{ alias }};
