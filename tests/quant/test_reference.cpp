// placeholder: filled in by the test author
