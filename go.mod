module herd

go 1.26.8
