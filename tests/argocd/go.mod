// The Argo CD health-check runner of `make test` (see main.go). Versions are those Argo CD builds with.
module ecs-image-operator/tests/argocd

go 1.24

require (
	github.com/yuin/gopher-lua v1.1.1
	gopkg.in/yaml.v3 v3.0.1
	layeh.com/gopher-json v0.0.0-20190114024228-97fed8db8427
)
